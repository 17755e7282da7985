//! The Helm chart of `deploy/helm/ferroserve/` (the plain manifests are
//! `deploy_manifests.rs`'s).
//!
//! - It must render what a cluster of Ferroserve nodes needs, as the plain manifests hold it
//!   (etcd as a StatefulSet of 3, nodes in cluster mode, probes, the token from a Secret,
//!   the app file from a ConfigMap, a proxy Service, the two PodDisruptionBudgets), with the
//!   same default app.
//! - Every `.Values.x.y` a template reads is in `values.yaml`.
//! - The chart passes `helm lint --strict` and renders with `helm template` (Helm's own Go
//!   SDK, from PyPI's `helm-python-sdk`, driven by `tests/deploy/helm.py`), for its defaults
//!   and for an external etcd; it refuses a cluster with no etcd and values its schema
//!   rejects.
//! - The rendered chart passes the Kubernetes JSON schemas, strictly (no unknown field),
//!   offline (PyPI's `kubernetes-validate`), for the oldest Kubernetes the chart supports
//!   (1.30) and the newest the schemas know.
//!
//! Without those two Python packages the tests that need them print a SKIP line, unless
//! `FERROSERVE_REQUIRE_HELM=1` (CI) makes that a failure:
//! `python3 -m pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0`.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use common::deploy::{
    HELM, KUBERNETES_VALIDATE, Names, all, assert_cluster, assert_start_accepts, chart_dir,
    container, documents, env, find, flags, kubernetes_validate, plain_manifests, python,
    python_has, root, text,
};
use serde_json::{Value, json};

/// `tests/deploy/helm.py ACTION` on the chart with `values`.
fn helm(action: &str, values: &Value) -> Output {
    Command::new(python())
        .arg(root().join("tests/deploy/helm.py"))
        .arg(action)
        .arg(chart_dir())
        .arg(values.to_string())
        .output()
        .expect("python runs")
}

/// `helm template` of the chart with `values`: its manifests, and the rendered text.
fn render(values: &Value) -> (Vec<Value>, String) {
    let out = helm("template", values);
    assert!(
        out.status.success(),
        "helm template with {values} failed:\n{}",
        text(&out)
    );
    let rendered = String::from_utf8(out.stdout).expect("utf-8");
    (documents(&rendered, "the rendered chart"), rendered)
}

/// The chart's names for release `ferroserve`.
fn chart_names(secret: &str, etcd: bool) -> Names {
    Names {
        server: "ferroserve".into(),
        peers: "ferroserve-peers".into(),
        proxy: "ferroserve".into(),
        app: "ferroserve-app".into(),
        secret: secret.into(),
        etcd: etcd.then(|| "ferroserve-etcd".into()),
    }
}

/// Every `.Values.a.b.c` in `text`.
fn values_paths(text: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(".Values.") {
        let tail = &rest[at + ".Values.".len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(tail.len());
        paths.insert(tail[..end].trim_end_matches('.').to_owned());
        rest = &tail[end..];
    }
    paths
}

#[test]
fn the_chart_reads_only_values_that_values_yaml_has() {
    let chart = chart_dir();
    let meta: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "ferroserve");
    for field in ["version", "appVersion", "description", "type"] {
        assert!(meta[field].is_string(), "Chart.yaml has {field}");
    }
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("values.schema.json")).expect("values.schema.json"),
    )
    .expect("values.schema.json is JSON");
    let mut read = BTreeSet::new();
    for entry in std::fs::read_dir(chart.join("templates")).expect("templates/") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("a template");
        for value in values_paths(&text) {
            let mut at = &values;
            let mut in_schema = &schema;
            for key in value.split('.') {
                at = at.get(key).unwrap_or_else(|| {
                    panic!(
                        "{} reads .Values.{value}, which values.yaml lacks",
                        path.display()
                    )
                });
                in_schema = &in_schema["properties"][key];
                assert!(
                    !in_schema.is_null(),
                    "{} reads .Values.{value}, which values.schema.json does not describe",
                    path.display()
                );
            }
            read.insert(value);
        }
    }
    for must in [
        "replicaCount",
        "image.repository",
        "resources",
        "app",
        "controlToken",
        "existingSecret",
        "etcd.enabled",
        "etcd.replicaCount",
        "externalEtcd.endpoints",
        "service.type",
        "service.port",
        "pdb.enabled",
    ] {
        assert!(read.contains(must), "no template reads .Values.{must}");
    }
}

#[test]
fn the_chart_lints_and_renders_a_whole_cluster() {
    if !python_has(HELM.0, HELM.1) {
        return;
    }
    let out = helm("lint", &json!({}));
    assert!(
        out.status.success(),
        "helm lint --strict fails:\n{}",
        text(&out)
    );
    let (docs, rendered) = render(&json!({}));
    let endpoints = assert_cluster(&docs, &chart_names("ferroserve-control-token", true));
    assert_eq!(
        endpoints,
        [
            "ferroserve-etcd-0.ferroserve-etcd:2379",
            "ferroserve-etcd-1.ferroserve-etcd:2379",
            "ferroserve-etcd-2.ferroserve-etcd:2379"
        ]
    );
    // The chart makes the Secret, with a token in it.
    let secret = find(&docs, "Secret", "ferroserve-control-token");
    assert!(
        secret["data"]["token"]
            .as_str()
            .is_some_and(|t| t.len() >= 40),
        "a random token: {secret}"
    );
    // The same app as the plain manifests.
    let plain = plain_manifests();
    assert_eq!(
        find(&docs, "ConfigMap", "ferroserve-app")["data"],
        find(&plain, "ConfigMap", "ferroserve-app")["data"],
        "the chart's default app is deploy/kubernetes's"
    );

    if python_has(KUBERNETES_VALIDATE.0, KUBERNETES_VALIDATE.1) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("rendered.yaml");
        std::fs::write(&path, rendered).expect("written");
        kubernetes_validate(&[path]);
    }
}

#[test]
fn the_chart_runs_on_an_external_etcd_with_the_users_secret() {
    if !python_has(HELM.0, HELM.1) {
        return;
    }
    let values = json!({
        "etcd": {"enabled": false},
        "externalEtcd": {
            "endpoints": ["etcd-a.infra:2379", "etcd-b.infra:2379", "etcd-c.infra:2379"],
            "prefix": "/team-a",
        },
        "existingSecret": "my-token",
        "existingSecretKey": "secret",
        "resources": {"limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": 1}},
        "service": {"type": "LoadBalancer", "port": 8080},
        "pdb": {"enabled": true, "maxUnavailable": 1},
    });
    let out = helm("lint", &values);
    assert!(out.status.success(), "helm lint fails:\n{}", text(&out));
    let (docs, rendered) = render(&values);
    assert!(
        docs.iter()
            .all(|doc| doc["metadata"]["name"] != "ferroserve-etcd"),
        "no etcd of the chart's own with externalEtcd"
    );
    let server = find(&docs, "StatefulSet", "ferroserve");
    let node = container(server, "ferroserve");
    let flags = flags(node);
    assert_eq!(
        flags["cluster"],
        "etcd://etcd-a.infra:2379,etcd-b.infra:2379,etcd-c.infra:2379/team-a"
    );
    assert_eq!(flags.get("gpus").map(String::as_str), Some("1"));
    assert_start_accepts(node);
    assert!(
        all(&docs, "Secret").is_empty(),
        "the user's Secret, not one of the chart's"
    );
    let token = &env(node)["FERROSERVE_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], "my-token");
    assert_eq!(token["key"], "secret");
    let proxy = find(&docs, "Service", "ferroserve");
    assert_eq!(proxy["spec"]["type"], "LoadBalancer");
    assert_eq!(proxy["spec"]["ports"][0]["port"], 8080);
    assert_eq!(all(&docs, "PodDisruptionBudget").len(), 1);

    if python_has(KUBERNETES_VALIDATE.0, KUBERNETES_VALIDATE.1) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("rendered.yaml");
        std::fs::write(&path, rendered).expect("written");
        kubernetes_validate(&[path]);
    }
}

#[test]
fn the_chart_refuses_values_that_cannot_work() {
    if !python_has(HELM.0, HELM.1) {
        return;
    }
    for (values, says) in [
        // No etcd at all: the nodes could not form a cluster.
        (
            json!({"etcd": {"enabled": false}}),
            "externalEtcd.endpoints is empty",
        ),
        // An even etcd has no better quorum than one member fewer.
        (json!({"etcd": {"replicaCount": 2}}), "replicaCount"),
        (json!({"replicaCount": "three"}), "replicaCount"),
        (
            json!({"etcd": {"enabled": false}, "externalEtcd": {"endpoints": ["http://etcd:2379"]}}),
            "endpoints",
        ),
        (json!({"replicaCunt": 3}), "replicaCunt"),
        (
            json!({"etcd": {"enabled": false}, "externalEtcd": {"endpoints": ["etcd:2379"], "prefix": "team-a"}}),
            "prefix",
        ),
    ] {
        let out = helm("template", &values);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "helm template accepts {values}:\n{said}"
        );
        assert!(
            said.contains(says),
            "helm template refuses {values} without naming {says}:\n{said}"
        );
    }
}
