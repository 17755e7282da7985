//! Tests of the model repository as backends and endpoints: open, rescans, `config.yaml`.

use super::*;
use crate::config::ModelOnly;

/// A repository in a temporary folder: `files` are (path, contents) under it.
fn repository(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, contents).expect("written");
    }
    dir
}

fn names(repository: &ModelRepository) -> Vec<(&str, &str)> {
    repository
        .models()
        .map(|m| (m.model.name.as_str(), m.model.version.as_str()))
        .collect()
}

#[test]
fn each_model_is_an_onnx_backend_with_batching_and_an_endpoint() {
    let dir = repository(&[
        ("iris/1/model.onnx", "v1"),
        ("iris/2/model.onnx", "v2"),
        ("mlp/7/model.onnx", "v7"),
    ]);
    let repo = ModelRepository::open(dir.path()).expect("valid");
    assert_eq!(names(&repo), [("iris", "2"), ("mlp", "7")]);
    let iris = repo.models().next().expect("iris");
    let BackendKind::Onnx(onnx) = &iris.backend.kind else {
        panic!("{:?}", iris.backend.kind);
    };
    assert_eq!(onnx.model, dir.path().join("iris/2/model.onnx"));
    assert_eq!(onnx.version.as_deref(), Some("2"));
    assert_eq!(iris.backend.config.max_batch_size, Some(8));
    assert_eq!(iris.backend.config.batch_wait_timeout_ms, 2);
    assert_eq!(iris.endpoint.config.route.as_deref(), Some("/iris"));
    assert_eq!(iris.endpoint.config.methods, [http::Method::POST]);
    assert!(iris.endpoint.config.traffic.uses("iris"));
}

#[test]
fn config_yaml_sets_backend_keys_over_the_defaults() {
    let dir = repository(&[
        ("iris/1/model.onnx", "v1"),
        (
            "iris/config.yaml",
            "# iris\nnum_replicas: 2\nmax_batch_size: 32\nonnx_threads: 2\n",
        ),
        ("mlp/1/model.onnx", "v1"),
        ("mlp/config.yaml", "# nothing yet\n"),
    ]);
    let repo = ModelRepository::open(dir.path()).expect("valid");
    let models: Vec<&ServedModel> = repo.models().collect();
    let iris = &models[0].backend;
    assert_eq!(iris.config.num_replicas, 2);
    assert_eq!(iris.config.max_batch_size, Some(32));
    assert_eq!(iris.config.batch_wait_timeout_ms, 2);
    assert!(matches!(&iris.kind, BackendKind::Onnx(o) if o.threads == 2));
    assert_eq!(models[1].backend.config.max_batch_size, Some(8));
}

#[test]
fn a_bad_config_yaml_names_its_file_line_and_key() {
    let cases = [
        (
            "num_replicas: 2\nmax_batch_sise: 4\n",
            2,
            "max_batch_sise",
            "unknown field",
        ),
        ("num_replicas: 0\n", 1, "num_replicas", "at least 1"),
        ("\nnum_replicas: many\n", 2, "num_replicas", ""),
        ("onnx_threads: 0\n", 1, "onnx_threads", "between"),
        (
            "max_concurrent_queries: 4\n",
            1,
            "max_concurrent_queries",
            "max_batch_size (8)",
        ),
        ("onnx: other.onnx\n", 1, "onnx", "takes no kind"),
        ("env: {A: b}\n", 1, "env", "python:"),
    ];
    for (config, line, key, message) in cases {
        let dir = repository(&[("iris/3/model.onnx", "v3"), ("iris/config.yaml", config)]);
        let e = ModelRepository::open(dir.path()).expect_err(config);
        let file = dir.path().join("iris/config.yaml").display().to_string();
        assert_eq!(
            (e.file.as_str(), e.line, e.key.as_str()),
            (file.as_str(), line, key),
            "{config}: {e}"
        );
        assert!(e.message.contains(message), "{config}: {e}");
    }
}

/// The version of each model the server runs, for [`ModelRepository::rescan`].
fn runs(models: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    |name| {
        let found = models.iter().find(|(model, _)| *model == name);
        found.map(|(_, version)| (*version).to_owned())
    }
}

#[test]
fn a_folder_that_cannot_be_a_model_is_skipped_naming_it() {
    let dir = repository(&[
        ("iris/1/model.onnx", "v1"),
        ("mlp/1/weights.bin", ""),
        ("v2/1/model.onnx", "v1"),
    ]);
    std::fs::create_dir_all(dir.path().join("lost+found")).expect("mkdir");
    let repo = ModelRepository::open(dir.path()).expect("iris serves");
    assert_eq!(names(&repo), [("iris", "1")]);
    let skipped = repo.skipped();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let lost = dir.path().join("lost+found").display().to_string();
    assert!(
        skipped[0].starts_with(&format!("{lost}: has no version folder")),
        "{skipped:?}"
    );
    let mlp = dir.path().join("mlp").display().to_string();
    assert!(skipped[1].starts_with(&format!("{mlp}: ")), "{skipped:?}");
    assert!(
        skipped[1].contains("NAME/VERSION/model.onnx"),
        "{skipped:?}"
    );
    assert!(skipped[2].contains("route `/v2`"), "{skipped:?}");
    assert!(
        skipped.iter().all(|s| s.ends_with("(not served)")),
        "{skipped:?}"
    );

    std::fs::remove_dir_all(dir.path().join("iris")).expect("removed");
    let e = ModelRepository::open(dir.path()).expect_err("no model to serve");
    assert_eq!(e.file, dir.path().display().to_string());
    assert!(e.message.contains("has no model to serve"), "{e}");
    assert!(
        e.message.contains(&format!("{mlp}: ")) && e.message.contains("route `/v2`"),
        "{e}"
    );
    let empty = tempfile::tempdir().expect("temp dir");
    let e = ModelRepository::open(empty.path()).expect_err("empty");
    assert!(e.message.contains("has no model to serve"), "{e}");
    let e = ModelRepository::open(dir.path().join("nothing")).expect_err("no folder");
    assert!(
        e.message.contains("cannot read the model repository"),
        "{e}"
    );
}

/// The stamp of the file `iris` serves, from its backend.
fn stamp_of(repo: &ModelRepository, name: &str) -> Option<String> {
    let model = repo.models().find(|m| m.model.name == name)?;
    match &model.backend.kind {
        BackendKind::Onnx(onnx) => onnx.file_stamp.clone(),
        _ => None,
    }
}

#[test]
fn a_model_file_replaced_in_place_is_a_new_kind_once_settled() {
    let dir = repository(&[("iris/1/model.onnx", "v1"), ("iris/2/model.onnx", "v2")]);
    let root = dir.path();
    let mut repo = ModelRepository::open(root).expect("valid");
    let first = stamp_of(&repo, "iris").expect("a stamp");
    assert!(first.starts_with("2 bytes, modified "), "{first}");
    let serving = runs(&[("iris", "2")]);
    std::fs::write(root.join("iris/2/model.onnx"), "v2, again").expect("written");
    let notes = repo.rescan(&serving);
    assert_eq!(names(&repo), [("iris", "2")], "not version 1 meanwhile");
    assert_eq!(stamp_of(&repo, "iris").as_ref(), Some(&first), "{notes:?}");
    assert_eq!(
        notes.pending,
        [
            "model `iris`: version 2's `model.onnx` is being replaced (new or still changing); version 2 serves"
        ]
    );
    let notes = repo.rescan(&serving);
    assert_eq!(notes, Rescan::default());
    let second = stamp_of(&repo, "iris").expect("a stamp");
    assert!(second.starts_with("9 bytes, modified "), "{second}");

    std::fs::remove_file(root.join("iris/2/model.onnx")).expect("removed");
    repo.rescan(&serving);
    assert_eq!(
        names(&repo),
        [("iris", "1")],
        "version 2 is gone: back to 1"
    );
}

#[test]
fn models_key_is_relative_to_the_app_file_and_names_clash_clearly() {
    let dir = repository(&[("models/iris/1/model.onnx", "v1")]);
    let file = dir.path().join("app.yaml");
    let file = file.to_str().expect("utf-8");
    let yaml = "models: models\nbackends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {backend: echo, route: /echo}\n";
    let app = AppConfig::from_yaml(yaml, file, &ModelOnly).expect("valid");
    let names: Vec<&str> = app.spec.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["echo", "iris"]);
    assert_eq!(app.spec.endpoints[1].config.route.as_deref(), Some("/iris"));
    let (base, models) =
        AppConfig::from_yaml_without_models(yaml, file, &ModelOnly).expect("valid");
    assert_eq!(base.spec.backends.len(), 1);
    assert_eq!(models, Some(dir.path().join("models")));

    let e = AppConfig::from_yaml("http: {port: 0}\nmodels: nowhere\n", file, &ModelOnly)
        .expect_err("no folder");
    assert_eq!((e.line, e.key.as_str()), (2, "models"));
    for (yaml, line, key) in [
        (
            "models: models\nbackends:\n  iris: {builtin: echo}\n",
            3,
            "backends.iris",
        ),
        (
            "models: models\nbackends:\n  a: {builtin: echo}\nendpoints:\n  iris: {backend: a}\n",
            5,
            "endpoints.iris",
        ),
        (
            "models: models\nbackends:\n  a: {builtin: echo}\nendpoints:\n  e: {backend: a, route: /iris/}\n",
            5,
            "endpoints.e.route",
        ),
    ] {
        let e = AppConfig::from_yaml(yaml, file, &ModelOnly).expect_err(yaml);
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.message.contains("model `iris`"), "{e}");
    }
}

#[test]
fn a_rescan_takes_settled_versions_and_keeps_what_serves_on_trouble() {
    let dir = repository(&[("iris/1/model.onnx", "v1"), ("mlp/1/model.onnx", "v1")]);
    let root = dir.path();
    let mut repo = ModelRepository::open(root).expect("valid");
    let write = |path: &str, contents: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, contents).expect("written");
    };
    write("iris/2/model.onnx", "v2");
    write("new/1/model.onnx", "v1");
    let serving = runs(&[("iris", "1"), ("mlp", "1")]);
    let notes = repo.rescan(&serving);
    assert_eq!(names(&repo), [("iris", "1"), ("mlp", "1")], "{notes:?}");
    assert!(notes.problems.is_empty(), "{notes:?}");
    assert_eq!(
        notes.pending,
        [
            "model `iris`: version 2's `model.onnx` is new or still changing; version 1 serves",
            "model `new`: version 1's `model.onnx` is new or still changing; not served"
        ],
    );
    let notes = repo.rescan(&serving);
    assert_eq!(notes, Rescan::default());
    assert_eq!(names(&repo), [("iris", "2"), ("mlp", "1"), ("new", "1")]);

    write("iris/config.yaml", "num_replicas: zero\n");
    std::fs::remove_dir_all(root.join("mlp")).expect("removed");
    std::fs::remove_file(root.join("new/1/model.onnx")).expect("removed");
    let serving = runs(&[("iris", "2"), ("new", "1")]);
    repo.rescan(&serving);
    let notes = repo.rescan(&serving).problems;
    assert_eq!(names(&repo), [("iris", "2"), ("new", "1")], "{notes:?}");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("config.yaml, line 1, key `num_replicas`"),
        "{notes:?}"
    );
    assert!(notes[0].contains("version 2 serves"), "{notes:?}");
    assert!(
        notes[1].contains("new") && notes[1].contains("version 1 serves"),
        "{notes:?}"
    );
    write("iris/config.yaml", "num_replicas: 2\n");
    repo.rescan(&serving);
    let notes = repo.rescan(runs(&[]));
    assert!(
        notes.problems.iter().all(|n| !n.contains("iris")),
        "{notes:?}"
    );
    assert_eq!(
        repo.models().next().map(|m| m.backend.config.num_replicas),
        Some(2)
    );
}
