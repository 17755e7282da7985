//! The Kubernetes deployment under `deploy/` for the tests of `deploy_manifests.rs` and
//! `deploy_chart.rs`: the manifests and their YAML, the Python tools (`helm-python-sdk`,
//! `kubernetes-validate`) and whether they are installed, and what a cluster of Ferroserve
//! nodes needs, checked on one set of manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    root().join("deploy/helm/ferroserve")
}

pub use super::python;

/// Whether Python can import `module`; when not, says so loudly, or fails when
/// `FERROSERVE_REQUIRE_HELM` is set. `install` is what to `pip install`.
pub fn python_has(module: &str, install: &str) -> bool {
    let required = std::env::var_os("FERROSERVE_REQUIRE_HELM").is_some();
    super::import_or_skip(
        module,
        "a deploy/ check",
        &format!("python3 -m pip install {install}"),
        required.then_some("FERROSERVE_REQUIRE_HELM"),
    )
}

pub const HELM: (&str, &str) = ("helm_python", "helm-python-sdk==0.2.2");
pub const KUBERNETES_VALIDATE: (&str, &str) =
    ("kubernetes_validate", "kubernetes-validate==1.37.0");

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Every document of a YAML stream, empty ones left out.
pub fn documents(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    docs.into_iter().filter(|doc| !doc.is_null()).collect()
}

/// The plain manifests: every document of every `deploy/kubernetes/*.yaml`.
pub fn plain_manifests() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes/ exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifest in deploy/kubernetes/");
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("readable");
            documents(&text, &path.display().to_string())
        })
        .collect()
}

/// `kubernetes-validate --strict` on `files`, for each Kubernetes version the deployment
/// supports: every document must be valid, with no unknown field.
pub fn kubernetes_validate(files: &[PathBuf]) {
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new(python())
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(files)
            .output()
            .expect("python runs");
        let said = text(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version} refuses a manifest:\n{said}"
        );
        assert!(
            said.contains("passed"),
            "kubernetes-validate validated nothing:\n{said}"
        );
    }
}

/// The one object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} named {name}, found {}; objects: {:?}",
        found.len(),
        docs.iter()
            .map(|doc| format!("{}/{}", doc["kind"], doc["metadata"]["name"]))
            .collect::<Vec<_>>()
    );
    found[0]
}

pub fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| doc["kind"] == kind).collect()
}

pub fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// The container named `name` of a workload's pod template.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
}

/// A container's flags: `--name=value` and `--name value` alike, by name.
pub fn flags(container: &Value) -> BTreeMap<String, String> {
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args is a list")
        .iter()
        .map(|a| str_of(a, "an arg"))
        .collect();
    let mut flags = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        if let Some(flag) = args[i].strip_prefix("--") {
            match flag.split_once('=') {
                Some((name, value)) => {
                    flags.insert(name.to_owned(), value.to_owned());
                }
                None if args.get(i + 1).is_some_and(|next| !next.starts_with("--")) => {
                    flags.insert(flag.to_owned(), args[i + 1].to_owned());
                    i += 1;
                }
                None => {
                    flags.insert(flag.to_owned(), String::new());
                }
            }
        }
        i += 1;
    }
    flags
}

/// A container's environment variables, by name.
pub fn env(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .map(|var| (str_of(&var["name"], "an env name").to_owned(), var.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every `$(VAR)` in the container's args is one of its env variables: Kubernetes leaves an
/// unknown reference as it is, and the flag would get the literal `$(VAR)`.
pub fn assert_references_defined(container: &Value) {
    let env = env(container);
    for arg in container["args"].as_array().expect("args") {
        let mut rest = str_of(arg, "an arg");
        while let Some(at) = rest.find("$(") {
            let name_and_more = &rest[at + 2..];
            let end = name_and_more.find(')').expect("a closed $(VAR)");
            let name = &name_and_more[..end];
            assert!(
                env.contains_key(name),
                "{arg} refers to $({name}), which is not in the container's env"
            );
            rest = &name_and_more[end..];
        }
    }
}

/// The container port a probe or Service names (by name or number).
pub fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = str_of(port, "a port");
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Whether `selector` (a label map) selects a pod with `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector is a map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

/// The flags `ferroserve start --help` lists.
pub fn start_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["start", "--help"])
        .output()
        .expect("ferroserve runs");
    assert!(
        out.status.success(),
        "ferroserve start --help: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| {
            flag.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .to_owned()
        })
        .filter(|flag| !flag.is_empty())
        .collect()
}

/// `ferroserve start` knows every flag the container passes: a renamed flag fails here
/// instead of in a crash-looping pod.
pub fn assert_start_accepts(container: &Value) {
    let known = start_flags();
    assert!(
        known.contains("cluster"),
        "ferroserve start has --cluster: {known:?}"
    );
    for flag in flags(container).keys() {
        assert!(
            known.contains(flag),
            "the manifests pass --{flag}, which `ferroserve start` does not know: {known:?}"
        );
    }
}

/// What the deployment is called: the plain manifests' names, or the chart's.
pub struct Names {
    pub server: String,
    pub peers: String,
    pub proxy: String,
    pub app: String,
    pub secret: String,
    pub etcd: Option<String>,
}

/// What a cluster of Ferroserve nodes needs, checked on one set of manifests. Returns the
/// etcd endpoints the nodes are given.
pub fn assert_cluster(docs: &[Value], names: &Names) -> Vec<String> {
    let server = find(docs, "StatefulSet", &names.server);
    let node = container(server, "ferroserve");
    let server_labels = pod_labels(server);
    assert_eq!(server["spec"]["replicas"], 3, "3 Ferroserve nodes");
    assert!(
        selects(&server["spec"]["selector"]["matchLabels"], server_labels),
        "the StatefulSet's selector selects its own pods"
    );

    // The headless Service that governs it.
    assert_eq!(server["spec"]["serviceName"], names.peers.as_str());
    let peers = find(docs, "Service", &names.peers);
    assert_eq!(peers["spec"]["clusterIP"], "None", "peers is headless");
    assert!(selects(&peers["spec"]["selector"], server_labels));

    // The command line of cluster mode.
    let args = node["args"].as_array().expect("args");
    assert_eq!(args.first(), Some(&json!("start")), "{args:?}");
    assert_eq!(args.get(1), Some(&json!("/etc/ferroserve/app.yaml")));
    let node_flags = flags(node);
    let node_env = env(node);
    let cluster = node_flags.get("cluster").expect("--cluster");
    let endpoints: Vec<String> = cluster
        .strip_prefix("etcd://")
        .unwrap_or_else(|| panic!("--cluster={cluster} is not etcd://..."))
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(
        node_flags.get("node-name").map(String::as_str),
        Some("$(POD_NAME)")
    );
    assert_eq!(
        node_env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "--node-name is the pod's (stable) name"
    );
    assert_eq!(
        node_flags.get("advertise").map(String::as_str),
        Some("$(POD_IP)")
    );
    assert_eq!(
        node_env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    for (flag, value) in [
        ("peer-port", "8300"),
        ("host", "0.0.0.0"),
        ("port", "8000"),
        ("control-host", "0.0.0.0"),
        ("control-port", "8265"),
    ] {
        assert_eq!(
            node_flags.get(flag).map(String::as_str),
            Some(value),
            "--{flag}: {node_flags:?}"
        );
    }
    assert_references_defined(node);
    assert_start_accepts(node);
    // Resources for placement come from the container's own limits.
    assert_eq!(
        node_flags.get("cpus").map(String::as_str),
        Some("$(CPU_LIMIT)")
    );
    assert_eq!(
        node_env["CPU_LIMIT"]["valueFrom"]["resourceFieldRef"]["resource"],
        "limits.cpu"
    );
    assert_eq!(
        node_flags.get("memory-bytes").map(String::as_str),
        Some("$(MEMORY_LIMIT)")
    );
    assert_eq!(
        node_env["MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"]["resource"],
        "limits.memory"
    );
    assert!(node["resources"]["limits"]["cpu"].is_string());
    assert!(node["resources"]["limits"]["memory"].is_string());
    assert!(node["resources"]["requests"].is_object());

    // The token from a Secret, never on the command line.
    assert!(
        !node_flags.contains_key("control-token"),
        "the token is not a flag"
    );
    let token = &node_env["FERROSERVE_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], names.secret.as_str());
    assert!(token["key"].is_string());

    // Probes on the proxy's port: ready once deployed, alive while serving.
    let http = container_port(node, &json!("http"));
    assert_eq!(http, 8000);
    for (probe, path) in [
        ("readinessProbe", "/-/ready"),
        ("livenessProbe", "/-/healthz"),
        ("startupProbe", "/-/healthz"),
    ] {
        let get = &node[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(node, &get["port"]), 8000, "{probe}'s port");
    }
    // Drains gracefully: a preStop pause, then SIGTERM within the grace period.
    let pause = node["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    let grace = server["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        (1..=10).contains(&pause) && grace >= pause + 15,
        "preStop {pause}s, grace {grace}s"
    );

    // Non-root, read-only, no capabilities.
    let pod_security = &server["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_eq!(node["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(node["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        node["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );

    // The app file: the ConfigMap's app.yaml at /etc/ferroserve/app.yaml.
    let mount = node["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == "/etc/ferroserve")
        .expect("a volume at /etc/ferroserve");
    let volume = server["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], names.app.as_str());
    let app = find(docs, "ConfigMap", &names.app);
    assert!(
        app["data"]["app.yaml"].is_string(),
        "the ConfigMap has app.yaml"
    );

    // The proxy's Service: 80 → 8000 on the nodes.
    let proxy = find(docs, "Service", &names.proxy);
    assert!(selects(&proxy["spec"]["selector"], server_labels));
    let port = &proxy["spec"]["ports"][0];
    assert_eq!(port["port"], 80);
    assert_eq!(container_port(node, &port["targetPort"]), 8000);

    // One node down at a time, at most.
    let pdbs = all(docs, "PodDisruptionBudget");
    let server_pdb = pdbs
        .iter()
        .find(|pdb| selects(&pdb["spec"]["selector"]["matchLabels"], server_labels))
        .expect("a PodDisruptionBudget for the Ferroserve nodes");
    assert_eq!(server_pdb["spec"]["maxUnavailable"], 1);

    // etcd: 3 members that name each other by their stable names.
    if let Some(etcd_name) = &names.etcd {
        let etcd = find(docs, "StatefulSet", etcd_name);
        let etcd_labels = pod_labels(etcd);
        assert_eq!(etcd["spec"]["replicas"], 3, "etcd is 3 members");
        assert_eq!(etcd["spec"]["podManagementPolicy"], "Parallel");
        let service = find(docs, "Service", etcd_name);
        assert_eq!(
            service["spec"]["clusterIP"], "None",
            "etcd's Service is headless"
        );
        assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
        assert!(selects(&service["spec"]["selector"], etcd_labels));
        assert_eq!(etcd["spec"]["serviceName"], etcd_name.as_str());
        let member = container(etcd, "etcd");
        assert_references_defined(member);
        let etcd_flags = flags(member);
        let expected: Vec<String> = (0..3)
            .map(|i| format!("{etcd_name}-{i}=http://{etcd_name}-{i}.{etcd_name}:2380"))
            .collect();
        assert_eq!(
            etcd_flags.get("initial-cluster"),
            Some(&expected.join(",")),
            "--initial-cluster from the stable pod names"
        );
        assert_eq!(
            etcd_flags
                .get("initial-advertise-peer-urls")
                .map(String::as_str),
            Some(format!("http://$(POD_NAME).{etcd_name}:2380").as_str())
        );
        assert_eq!(
            container_port(member, &json!("client")),
            2379,
            "the client port"
        );
        assert_eq!(container_port(member, &json!("peer")), 2380);
        assert_eq!(
            etcd["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data",
            "etcd's data on a PersistentVolumeClaim"
        );
        assert!(
            member["volumeMounts"]
                .as_array()
                .expect("volumeMounts")
                .iter()
                .any(|m| m["name"] == "data"),
            "etcd mounts its data volume"
        );
        assert!(
            etcd["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
                ["preferredDuringSchedulingIgnoredDuringExecution"]
                .is_array(),
            "etcd members prefer different machines"
        );
        let members: Vec<String> = (0..3)
            .map(|i| format!("{etcd_name}-{i}.{etcd_name}:2379"))
            .collect();
        assert_eq!(endpoints, members, "--cluster names every etcd member");

        let etcd_pdb = pdbs
            .iter()
            .find(|pdb| selects(&pdb["spec"]["selector"]["matchLabels"], etcd_labels))
            .expect("a PodDisruptionBudget for etcd");
        assert_eq!(etcd_pdb["spec"]["minAvailable"], 2, "etcd keeps its quorum");

        // No selector of one reaches the other's pods.
        assert!(!selects(&proxy["spec"]["selector"], etcd_labels));
        assert!(!selects(
            &server_pdb["spec"]["selector"]["matchLabels"],
            etcd_labels
        ));
        assert!(!selects(
            &etcd_pdb["spec"]["selector"]["matchLabels"],
            server_labels
        ));
        assert!(!selects(&service["spec"]["selector"], server_labels));
    }
    endpoints
}
