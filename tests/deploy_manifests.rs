//! The plain Kubernetes manifests of `deploy/kubernetes/` (the Helm chart is
//! `deploy_chart.rs`'s).
//!
//! - They must hold what a cluster of Ferroserve nodes needs: etcd as a StatefulSet of 3
//!   whose `--initial-cluster` names its own pods, nodes started with `--cluster` (every etcd
//!   member), `--node-name` and `--advertise` from the downward API, probes on `/-/ready` and
//!   `/-/healthz`, the token from a Secret, the app file from a ConfigMap at
//!   `/etc/ferroserve/app.yaml`, a proxy Service 80 → 8000, and the two PodDisruptionBudgets.
//!   Every Service and budget selects the pods it means, and no others.
//! - The app files shipped (their ConfigMap's and the chart's `values.yaml`) pass
//!   `ferroserve check`.
//! - They pass the Kubernetes JSON schemas, strictly (no unknown field), offline (PyPI's
//!   `kubernetes-validate`), for the oldest Kubernetes the chart supports (1.30) and the
//!   newest the schemas know.
//!
//! Without that Python package the test that needs it prints a SKIP line, unless
//! `FERROSERVE_REQUIRE_HELM=1` (CI) makes that a failure:
//! `python3 -m pip install kubernetes-validate==1.37.0`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::deploy::{
    KUBERNETES_VALIDATE, Names, all, assert_cluster, chart_dir, find, kubernetes_validate,
    plain_manifests, python_has, root, str_of, text,
};
use serde_json::Value;

fn plain_names() -> Names {
    Names {
        server: "ferroserve".into(),
        peers: "ferroserve-peers".into(),
        proxy: "ferroserve".into(),
        app: "ferroserve-app".into(),
        secret: "ferroserve-control-token".into(),
        etcd: Some("etcd".into()),
    }
}

/// `ferroserve check` accepts `app` (an app file's text).
fn assert_app_checks(app: &str, what: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, app).expect("written");
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("ferroserve runs");
    assert!(
        out.status.success(),
        "`ferroserve check` refuses {what}:\n{}",
        text(&out)
    );
}

#[test]
fn the_plain_manifests_hold_a_whole_cluster() {
    let docs = plain_manifests();
    for doc in &docs {
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "a manifest without apiVersion or kind: {doc}"
        );
        assert!(
            doc["metadata"].get("namespace").is_none(),
            "the manifests are namespace-agnostic: {} names one",
            doc["metadata"]["name"]
        );
    }
    let endpoints = assert_cluster(&docs, &plain_names());
    assert_eq!(
        endpoints,
        ["etcd-0.etcd:2379", "etcd-1.etcd:2379", "etcd-2.etcd:2379"]
    );
    // The Secret is the user's to create (README): no token ships in the repository.
    assert!(
        all(&docs, "Secret").is_empty(),
        "no Secret in deploy/kubernetes/"
    );
}

#[test]
fn the_app_files_shipped_pass_ferroserve_check() {
    let docs = plain_manifests();
    let app = find(&docs, "ConfigMap", "ferroserve-app");
    assert_app_checks(
        str_of(&app["data"]["app.yaml"], "app.yaml"),
        "deploy/kubernetes's ConfigMap",
    );
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let values: Value = serde_saphyr::from_str(&values).expect("values.yaml is YAML");
    assert_app_checks(
        str_of(&values["app"], "app"),
        "the chart's values.yaml `app`",
    );
}

#[test]
fn the_plain_manifests_pass_the_kubernetes_schemas() {
    if !python_has(KUBERNETES_VALIDATE.0, KUBERNETES_VALIDATE.1) {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    kubernetes_validate(&files);
}
