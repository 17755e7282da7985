//! Persisted desired state: the [`StateStore`] trait, and [`FileStore`], which keeps the deployed app in one file of a state directory, written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::AppSpec;

/// Where the desired app is kept between runs: saved on every change, loaded at start.
/// The embedded default is [`FileStore`]; a cluster keeps it in etcd.
pub trait StateStore: Send + Sync + 'static {
    /// The app saved last, if any.
    fn load(&self) -> Result<Option<AppSpec>, String>;
    /// Saves `app`, replacing what was saved.
    fn save(&self, app: &AppSpec) -> Result<(), String>;
    /// Where it keeps the state, for messages.
    fn describe(&self) -> String;
}

/// The desired app as `app.json` in a directory: written to a temporary file, synced, then
/// renamed over the old one, so that a crash at any moment leaves the old file or the new
/// one, never a torn one.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, String> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        Ok(Self { dir })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("app.json")
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<AppSpec>, String> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let app: AppSpec = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a saved app: {e}", path.display()))?;
        app.validate()
            .map_err(|e| format!("{} holds an invalid app: {e}", path.display()))?;
        Ok(Some(app))
    }

    fn save(&self, app: &AppSpec) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(app).map_err(|e| e.to_string())?;
        write_atomically(&self.file(), &json)
    }

    fn describe(&self) -> String {
        self.file().display().to_string()
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, synced before
/// it is renamed over `path`, and the directory synced after.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let mut temp = tempfile_in(dir).map_err(|e| fail("save", e))?;
    temp.1.write_all(bytes).map_err(|e| fail("write", e))?;
    temp.1.sync_all().map_err(|e| fail("sync", e))?;
    std::fs::rename(&temp.0, path).map_err(|e| fail("replace", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Makes the rename itself durable; not every filesystem allows it.
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new file in `dir` with a name no other writer uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for _ in 0..16 {
        let path = dir.join(format!(
            ".app.json.{}.{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, BackendKind, BackendSpec, EndpointConfig, EndpointSpec};

    #[test]
    fn saves_and_loads_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileStore::open(dir.path().join("state")).expect("opens");
        assert_eq!(store.load().expect("loads"), None, "nothing saved yet");
        let app = AppSpec {
            backends: vec![BackendSpec {
                name: "echo".into(),
                kind: BackendKind::Builtin("echo".into()),
                config: BackendConfig::default().num_replicas(2),
                line: 0,
            }],
            endpoints: vec![EndpointSpec {
                name: "echo".into(),
                config: EndpointConfig::backend("echo").route("/echo"),
                line: 0,
            }],
        };
        store.save(&app).expect("saves");
        store.save(&app).expect("saves again");
        assert_eq!(store.load().expect("loads"), Some(app));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["app.json"]);
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileStore::open(dir.path()).expect("opens");
        std::fs::write(dir.path().join("app.json"), "{\"backends\": 3").expect("written");
        let err = store.load().expect_err("damaged");
        assert!(err.contains("is not a saved app"), "{err}");
    }
}
