{{/* The chart's name, or nameOverride. */}}
{{- define "ferroserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, or RELEASE (when it already holds the
chart's name), or RELEASE-CHART. 52 characters at most, so that a StatefulSet pod's name
with its controller-revision-hash label stays within 63.
*/}}
{{- define "ferroserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferroserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ferroserve.labels" -}}
helm.sh/chart: {{ include "ferroserve.chart" . }}
app.kubernetes.io/name: {{ include "ferroserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferroserve
{{- end }}

{{/* The Ferroserve nodes' selector: the component keeps them apart from etcd's pods. */}}
{{- define "ferroserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferroserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "ferroserve.etcd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferroserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{/* etcd's StatefulSet and headless Service: its members are NAME-0.NAME ... */}}
{{- define "ferroserve.etcd.fullname" -}}
{{- printf "%s-etcd" (include "ferroserve.fullname" .) }}
{{- end }}

{{- define "ferroserve.peers" -}}
{{- printf "%s-peers" (include "ferroserve.fullname" .) }}
{{- end }}

{{- define "ferroserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret with the control token, and its key: the user's, or the chart's. */}}
{{- define "ferroserve.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-control-token" (include "ferroserve.fullname" .) }}
{{- end }}
{{- end }}

{{- define "ferroserve.secretKey" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecretKey }}
{{- else -}}
token
{{- end }}
{{- end }}

{{/*
The etcd client endpoints, HOST:PORT joined by commas: the chart's members by their stable
names (short names: they resolve in the release's namespace), or externalEtcd.endpoints and
its key prefix.
*/}}
{{- define "ferroserve.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $etcd := include "ferroserve.etcd.fullname" . }}
{{- $members := list }}
{{- range $i := until (int .Values.etcd.replicaCount) }}
{{- $members = append $members (printf "%s-%d.%s:2379" $etcd $i $etcd) }}
{{- end }}
{{- join "," $members }}
{{- else if .Values.externalEtcd.endpoints }}
{{- join "," .Values.externalEtcd.endpoints }}{{ .Values.externalEtcd.prefix }}
{{- else }}
{{- fail "etcd.enabled is false and externalEtcd.endpoints is empty: Ferroserve's cluster mode needs an etcd (set externalEtcd.endpoints to HOST:PORT entries, or etcd.enabled=true)" }}
{{- end }}
{{- end }}

{{/* etcd's --initial-cluster: every member by its stable name, NAME-i=http://NAME-i.NAME:2380. */}}
{{- define "ferroserve.etcd.initialCluster" -}}
{{- $etcd := include "ferroserve.etcd.fullname" . }}
{{- $members := list }}
{{- range $i := until (int .Values.etcd.replicaCount) }}
{{- $members = append $members (printf "%s-%d=http://%s-%d.%s:2380" $etcd $i $etcd $i $etcd) }}
{{- end }}
{{- join "," $members }}
{{- end }}
