//! The library's layers point one way: each top-level module of `crates/ferroserve/src` uses
//! only modules below it in the order `lib.rs` declares (tests excepted). A stronger check
//! than "no cycle": a new import that climbs a layer fails here, with the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom up, as `lib.rs` and docs/ARCHITECTURE.md list them.
const LAYERS: &[&str] = &[
    "error",
    "fnv",
    "form",
    "metrics",
    "request",
    "tensor", // the protocol's tensors, a leaf
    "response",
    "layer",  // core types
    "config", // pure data
    "store",  // where it is kept
    "backend",
    "builtin",  // user code behind one seam
    "snapshot", // the read model
    "replica",
    "router", // replicas, and the request path over them
    "handle",
    "proxy",      // ingress
    "controller", // desired state to running replicas
    "serve",      // everything together
    "cluster",    // many nodes on etcd
    "control",    // operating it
    "internals",  // for benchmarks
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/ferroserve/src")
}

/// Blanks every item under `#[cfg(test)]` (a test may borrow a fixture from anywhere).
fn without_tests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        out.extend(
            item[..end]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to (`controller/x.rs` and `controller.rs` alike).
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(src()).expect("under src");
    let first = relative.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let rank: BTreeMap<&str, usize> = LAYERS.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut climbs = Vec::new();
    for file in files {
        let module = module_of(&file);
        if module == "lib" || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(&own) = rank.get(module.as_str()) else {
            panic!(
                "module `{module}` is in no layer: add it to LAYERS (and lib.rs, ARCHITECTURE.md)"
            );
        };
        let text = without_tests(&std::fs::read_to_string(&file).expect("readable"));
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let used: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(&theirs) = rank.get(used.as_str())
                    && theirs >= own
                    && used != module
                {
                    climbs.push(format!(
                        "{}:{}: `{module}` uses `{used}`, which is not below it",
                        file.strip_prefix(src()).expect("under src").display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        climbs.is_empty(),
        "imports that climb a layer:\n{}",
        climbs.join("\n")
    );
}

#[test]
fn test_items_are_left_out() {
    let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n#[cfg(test)]\nuse crate::y;\nfn f() {}\n";
    let kept = without_tests(text);
    assert!(kept.contains("crate::a") && kept.contains("fn f"));
    assert!(!kept.contains("crate::z") && !kept.contains("crate::y"));
    assert_eq!(kept.lines().count(), text.lines().count());
}
