//! A model repository's folder, `DIR/NAME/VERSION/model.onnx`, read as a listing (a folder that cannot be read is noted, not fatal), and which version of each model to serve, decided from listings alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The model file of a version folder.
pub const MODEL_FILE: &str = "model.onnx";
/// A model folder's optional file of backend keys.
pub const CONFIG_FILE: &str = "config.yaml";

/// A file's size and modification time: a file that changes between two listings is still
/// being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Its size in bytes.
    pub len: u64,
    /// When it was last modified, where the platform says.
    pub modified: Option<SystemTime>,
}

/// `1234 bytes, modified 1700000000.123456789` (seconds since the Unix epoch): what tells
/// one file at a path from another put there since.
impl fmt::Display for FileStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.len)?;
        match self
            .modified
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            Some(at) => write!(f, ", modified {}.{:09}", at.as_secs(), at.subsec_nanos()),
            None => Ok(()),
        }
    }
}

/// What a repository folder holds: each folder in it, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The folders of the repository (files in it are not models), by name.
    pub models: BTreeMap<String, ModelFolder>,
}

/// What a model folder holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFolder {
    /// Each folder in it by name, with the stamp of its `model.onnx` when it has one.
    pub versions: BTreeMap<String, Option<FileStamp>>,
    /// The stamp of its `config.yaml`, when it has one.
    pub config: Option<FileStamp>,
    /// Why the folder cannot be a model, when it was seen but could not be read (or its
    /// name cannot be a model's): it is skipped.
    pub problem: Option<String>,
}

/// One model to serve: its name and the version chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryModel {
    /// The model folder's name: the backend's and the endpoint's.
    pub name: String,
    /// The version folder's name (a positive integer).
    pub version: String,
    /// `DIR/NAME/VERSION/model.onnx`.
    pub model: PathBuf,
    /// The stamp of that file as listed: a file replaced in place is another model.
    pub stamp: FileStamp,
    /// `DIR/NAME/config.yaml`, when there is one.
    pub config: Option<PathBuf>,
}

/// What a listing says of one model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Serve this version.
    Model {
        /// The version chosen.
        model: RepositoryModel,
        /// Why a newer version waits, when one does: its file is new or still changing.
        waiting: Option<String>,
    },
    /// Not yet: each `model.onnx` (or the `config.yaml`) is new or changed since the
    /// previous listing, so it may be half written. Why, for the log.
    Pending(String),
    /// The folder cannot be read, or no version folder in it holds a `model.onnx`. What is
    /// wrong.
    Unusable(String),
}

/// Which version of each model to serve, from `listing` of the repository at `dir`.
///
/// Folders whose names start with `.` are skipped; one with a [`ModelFolder::problem`]
/// is [`Found::Unusable`]. Versions are the folders named by a
/// positive integer (`1`, `2`, `10`, compared as numbers; other folders are ignored); the
/// highest one holding a `model.onnx` is chosen. With a `previous` listing, a file counts
/// only when its size and modification time are the same in both, so a file being copied in
/// is not taken half written: a newer version waits a listing, and a model whose every
/// file is new is [`Found::Pending`].
pub fn select(
    dir: &Path,
    listing: &Listing,
    previous: Option<&Listing>,
) -> BTreeMap<String, Found> {
    listing
        .models
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, folder)| {
            let before = previous.map(|p| p.models.get(name));
            (name.clone(), select_one(dir, name, folder, before))
        })
        .collect()
}

/// `before`: `None` on a first listing, `Some(None)` when the folder is new.
fn select_one(
    dir: &Path,
    name: &str,
    folder: &ModelFolder,
    before: Option<Option<&ModelFolder>>,
) -> Found {
    if let Some(problem) = &folder.problem {
        return Found::Unusable(problem.clone());
    }
    let settled = |now: &FileStamp, then: Option<&FileStamp>| match before {
        None => true,
        Some(_) => then == Some(now),
    };
    let mut versions: Vec<(u64, &str, &FileStamp)> = folder
        .versions
        .iter()
        .filter_map(|(v, stamp)| Some((version_number(v)?, v.as_str(), stamp.as_ref()?)))
        .collect();
    versions.sort_by_key(|(n, _, _)| std::cmp::Reverse(*n));
    let Some(&(_, newest, _)) = versions.first() else {
        return Found::Unusable(format!(
            "has no version folder (named by a positive integer) holding `{MODEL_FILE}`; the layout is NAME/VERSION/{MODEL_FILE}"
        ));
    };
    let previous = |v: &str| before.flatten().and_then(|f| f.versions.get(v)?.as_ref());
    let changing = format!("version {newest}'s `{MODEL_FILE}` is new or still changing");
    let Some(&(_, version, stamp)) = versions
        .iter()
        .find(|(_, v, stamp)| settled(stamp, previous(v)))
    else {
        return Found::Pending(changing);
    };
    if let Some(stamp) = &folder.config
        && !settled(stamp, before.flatten().and_then(|f| f.config.as_ref()))
    {
        return Found::Pending(format!("`{CONFIG_FILE}` is new or still changing"));
    }
    let folder_path = dir.join(name);
    Found::Model {
        model: RepositoryModel {
            name: name.to_owned(),
            version: version.to_owned(),
            model: folder_path.join(version).join(MODEL_FILE),
            stamp: *stamp,
            config: folder.config.map(|_| folder_path.join(CONFIG_FILE)),
        },
        waiting: (version != newest).then_some(changing),
    }
}

/// The number a version folder is named by: a positive integer written without a sign or
/// leading zeros.
fn version_number(name: &str) -> Option<u64> {
    let n: u64 = name.parse().ok()?;
    (n > 0 && n.to_string() == name).then_some(n)
}

/// Reads the repository at `dir`: each folder in it (the contents of those whose names
/// start with `.` are not read), each folder in those, and the stamps of their
/// `model.onnx` and `config.yaml`. Symbolic links are followed. Only a repository folder
/// that cannot be read is an error: a model folder that cannot be read, or whose name is
/// not UTF-8 (listed by its name with U+FFFD for what is not), has a
/// [`ModelFolder::problem`].
pub fn read_listing(dir: &Path) -> Result<Listing, String> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the model repository `{}`: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            let problem = "is not named in UTF-8, so it cannot name a model (nor a route)";
            // A folder named in UTF-8 as this one is shown keeps the name.
            let shown = name.to_string_lossy().into_owned();
            listing.models.entry(shown).or_insert(ModelFolder {
                problem: Some(problem.to_owned()),
                ..ModelFolder::default()
            });
            continue;
        };
        let folder = if name.starts_with('.') {
            ModelFolder::default()
        } else {
            read_model_folder(&path).unwrap_or_else(|e| ModelFolder {
                problem: Some(format!("cannot be read: {e}")),
                ..ModelFolder::default()
            })
        };
        listing.models.insert(name.to_owned(), folder);
    }
    Ok(listing)
}

fn read_model_folder(path: &Path) -> std::io::Result<ModelFolder> {
    let mut folder = ModelFolder::default();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let inner = entry.path();
        if inner.is_dir() {
            folder.versions.insert(name, stamp(&inner.join(MODEL_FILE)));
        } else if name == CONFIG_FILE {
            folder.config = stamp(&inner);
        }
    }
    Ok(folder)
}

/// The stamp of the file at `path`; `None` when it is not a file.
fn stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    metadata.is_file().then(|| FileStamp {
        len: metadata.len(),
        modified: metadata.modified().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(len: u64, second: u64) -> FileStamp {
        FileStamp {
            len,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(second)),
        }
    }

    /// A listing of `(model, version, stamp of model.onnx)`; `None`: a folder with no file.
    fn listing(entries: &[(&str, &str, Option<FileStamp>)]) -> Listing {
        let mut listing = Listing::default();
        for (model, version, stamp) in entries {
            let folder = listing.models.entry((*model).to_owned()).or_default();
            if !version.is_empty() {
                folder.versions.insert((*version).to_owned(), *stamp);
            }
        }
        listing
    }

    fn served(found: &Found) -> (&str, &Path) {
        match found {
            Found::Model { model: m, .. } => (m.version.as_str(), m.model.as_path()),
            other => panic!("not served: {other:?}"),
        }
    }

    #[test]
    fn the_highest_numbered_version_with_a_model_is_served() {
        let now = listing(&[
            ("iris", "1", Some(at(10, 1))),
            ("iris", "2", Some(at(10, 1))),
            ("iris", "10", Some(at(10, 1))),
            ("iris", "11", None),
            ("iris", "012", Some(at(10, 1))),
            ("iris", "0", Some(at(10, 1))),
            ("iris", "latest", Some(at(10, 1))),
            ("mlp", "3", Some(at(10, 1))),
        ]);
        let found = select(Path::new("repo"), &now, None);
        assert_eq!(
            served(&found["iris"]),
            ("10", Path::new("repo/iris/10/model.onnx"))
        );
        assert_eq!(served(&found["mlp"]).0, "3");
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn hidden_folders_are_skipped_and_empty_ones_are_unusable() {
        let now = listing(&[
            (".git", "1", Some(at(1, 1))),
            ("empty", "", None),
            ("no_file", "1", None),
            ("words", "v1", Some(at(1, 1))),
        ]);
        let found = select(Path::new("repo"), &now, None);
        assert!(!found.contains_key(".git"));
        for name in ["empty", "no_file", "words"] {
            let Found::Unusable(why) = &found[name] else {
                panic!("{name}: {:?}", found[name]);
            };
            assert!(why.contains("NAME/VERSION/model.onnx"), "{why}");
        }
    }

    #[test]
    fn a_file_is_taken_once_it_is_the_same_in_two_listings() {
        let first = listing(&[("iris", "1", Some(at(10, 1)))]);
        let copying = listing(&[
            ("iris", "1", Some(at(10, 1))),
            ("iris", "2", Some(at(5, 2))),
        ]);
        let found = select(Path::new("r"), &copying, Some(&first));
        assert_eq!(served(&found["iris"]).0, "1", "version 2 is still changing");
        assert!(
            matches!(&found["iris"], Found::Model { waiting: Some(why), .. } if why.contains("version 2")),
            "{found:?}"
        );
        let grown = listing(&[
            ("iris", "1", Some(at(10, 1))),
            ("iris", "2", Some(at(9, 3))),
        ]);
        let found = select(Path::new("r"), &grown, Some(&copying));
        assert_eq!(served(&found["iris"]).0, "1", "it changed again");
        let found = select(Path::new("r"), &grown, Some(&grown));
        assert_eq!(served(&found["iris"]).0, "2", "settled");
        assert!(matches!(&found["iris"], Found::Model { waiting: None, .. }));
    }

    #[test]
    fn a_new_model_waits_until_its_file_settles() {
        let before = listing(&[("iris", "1", Some(at(10, 1)))]);
        let now = listing(&[("iris", "1", Some(at(10, 1))), ("mlp", "1", Some(at(3, 5)))]);
        let found = select(Path::new("r"), &now, Some(&before));
        assert!(matches!(&found["mlp"], Found::Pending(why) if why.contains("version 1")));
        let found = select(Path::new("r"), &now, Some(&now));
        assert_eq!(served(&found["mlp"]).0, "1");
    }

    #[test]
    fn a_changing_config_file_holds_the_model_back() {
        let mut before = listing(&[("iris", "1", Some(at(10, 1)))]);
        before.models.get_mut("iris").expect("iris").config = Some(at(20, 1));
        let mut now = before.clone();
        now.models.get_mut("iris").expect("iris").config = Some(at(25, 2));
        let found = select(Path::new("r"), &now, Some(&before));
        assert!(matches!(&found["iris"], Found::Pending(why) if why.contains("config.yaml")));
        let Found::Model { model, .. } = &select(Path::new("r"), &now, Some(&now))["iris"] else {
            panic!("settled");
        };
        assert_eq!(
            model.config.as_deref(),
            Some(Path::new("r/iris/config.yaml"))
        );
    }

    #[test]
    fn a_folder_on_disk_is_listed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("iris/1")).expect("mkdir");
        std::fs::create_dir_all(root.join("iris/2")).expect("mkdir");
        std::fs::create_dir_all(root.join(".hidden/1")).expect("mkdir");
        std::fs::write(root.join("iris/1/model.onnx"), b"12345").expect("write");
        std::fs::write(root.join("iris/config.yaml"), b"num_replicas: 2\n").expect("write");
        std::fs::write(root.join("README.md"), b"not a model").expect("write");
        let listing = read_listing(root).expect("readable");
        assert_eq!(
            listing.models.keys().collect::<Vec<_>>(),
            [".hidden", "iris"]
        );
        let iris = &listing.models["iris"];
        assert_eq!(iris.versions["1"].map(|s| s.len), Some(5));
        assert_eq!(iris.versions["2"], None);
        assert_eq!(iris.config.map(|s| s.len), Some(16));
        assert!(listing.models[".hidden"].versions.is_empty());
        let err = read_listing(&root.join("missing")).expect_err("no folder");
        assert!(err.contains("cannot read the model repository"), "{err}");
    }

    #[test]
    fn a_folder_that_cannot_be_read_or_named_is_unusable_not_fatal() {
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("iris/1")).expect("mkdir");
        std::fs::write(root.join("iris/1/model.onnx"), b"12345").expect("write");
        let odd = std::ffi::OsStr::from_bytes(b"odd\xff");
        std::fs::create_dir_all(root.join(odd).join("1")).expect("a name not in UTF-8");
        let locked = root.join("locked");
        std::fs::create_dir_all(locked.join("1")).expect("mkdir");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        // Root reads it all the same: then only the name not in UTF-8 is unusable.
        let unreadable = std::fs::read_dir(&locked).is_err();
        let listing = read_listing(root).expect("the repository is readable");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let found = select(root, &listing, None);
        assert!(matches!(&found["iris"], Found::Model { .. }), "{found:?}");
        let Found::Unusable(why) = &found["odd\u{FFFD}"] else {
            panic!("{found:?}");
        };
        assert!(why.contains("not named in UTF-8"), "{why}");
        match &found["locked"] {
            Found::Unusable(why) if unreadable => {
                assert!(why.starts_with("cannot be read: "), "{why}");
            }
            Found::Unusable(why) => assert!(why.contains("has no version folder"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_model_chosen_carries_its_file_stamp() {
        let now = listing(&[("iris", "1", Some(at(10, 7)))]);
        let Found::Model { model, .. } = &select(Path::new("r"), &now, None)["iris"] else {
            panic!("served");
        };
        assert_eq!(model.stamp, at(10, 7));
        assert_eq!(model.stamp.to_string(), "10 bytes, modified 7.000000000");
        let unknown = FileStamp {
            len: 3,
            modified: None,
        };
        assert_eq!(unknown.to_string(), "3 bytes");
    }
}
