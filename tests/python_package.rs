//! The Python package in `python/`: its unit tests pass under the machine's `python3`, and
//! `pip install ./python` installs it.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

fn python_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
}

#[test]
fn the_python_unit_tests_pass() {
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
        .current_dir(python_dir())
        .env("PYTHONPATH", python_dir())
        // The client tests start this binary as their server.
        .env("FERROSERVE_BIN", env!("CARGO_BIN_EXE_ferroserve"))
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python unit tests failed:\n{stderr}"
    );
    assert!(stderr.contains("OK"), "{stderr}");
    // A test skipped for a missing package (unittest's "... skipped 'why'"): named here, and
    // a failure where every package must be there.
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains(" skipped ")).collect();
    if !skipped.is_empty() {
        assert!(
            std::env::var_os("FERROSERVE_REQUIRE_PYTHON_DEPS").is_none(),
            "FERROSERVE_REQUIRE_PYTHON_DEPS is set but Python tests were skipped:\n{}",
            skipped.join("\n")
        );
        common::skip(&format!(
            "Python unit tests (python3 -m pip install -r tests/requirements.txt):\n{}",
            skipped.join("\n")
        ));
    }
}

/// Runs `python3 -m pip ARGS` (quiet, without the root-user and version notes, and without
/// build isolation: the build backends come from `tests/requirements.txt`, not PyPI), and
/// fails the test with pip's output if it fails. `envs` go to pip's process.
fn pip(args: &[&OsStr], envs: &[(&str, &OsStr)]) {
    let output = Command::new("python3")
        .args(["-m", "pip"])
        .args(args)
        .envs(envs.iter().copied())
        .args(["--quiet", "--no-deps", "--no-build-isolation"])
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INDEX", "1")
        .output()
        .expect("pip runs");
    assert!(
        output.status.success(),
        "pip {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn pip_installs_the_package() {
    if !common::python_dep("setuptools", "pip install ./python") {
        return;
    }
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = scratch.join("pip-install-ferroserve");
    let _ = std::fs::remove_dir_all(&target);
    // Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    let source = scratch.join("pip-source-ferroserve");
    let _ = std::fs::remove_dir_all(&source);
    copy_dir(&python_dir(), &source);
    pip(
        &[
            "install".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
            source.as_os_str(),
        ],
        &[],
    );
    let output = Command::new("python3")
        .args([
            "-c",
            "import ferroserve, sys; print(ferroserve.__version__, ferroserve.__file__)",
        ])
        .env("PYTHONPATH", &target)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("0.1.0 "),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("pip-install-ferroserve"),
        "imported the installed copy: {stdout}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "__pycache__") {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy file");
        }
    }
}

/// `pip install .` from the repository builds one wheel holding the `ferroserve` command
/// and the package (maturin, `bindings = "bin"`). Built here with the dev profile in a
/// target directory of its own (sharing `target/` would relink the binary other tests run
/// while they run it); users get the release build.
#[test]
fn one_wheel_holds_the_command_and_the_package() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("maturin-wheel");
    let _ = std::fs::remove_dir_all(&scratch);
    let wheels = scratch.join("wheels");
    if !common::python_dep("maturin", "the wheel of `pip install .`") {
        return;
    }
    let cargo_target = root.join("target/maturin");
    pip(
        &[
            "wheel".as_ref(),
            "--wheel-dir".as_ref(),
            wheels.as_os_str(),
            root.as_os_str(),
        ],
        &[
            ("MATURIN_PEP517_ARGS", "--profile dev".as_ref()),
            ("CARGO_TARGET_DIR", cargo_target.as_os_str()),
        ],
    );
    let wheel = std::fs::read_dir(&wheels)
        .expect("the wheel dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    let target = scratch.join("installed");
    pip(
        &[
            "install".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
            wheel.as_os_str(),
        ],
        &[],
    );
    let version = Command::new(target.join("bin/ferroserve"))
        .arg("--version")
        .output()
        .expect("the installed command runs");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("ferroserve "),
        "{version:?}"
    );
    let import = Command::new("python3")
        .args([
            "-c",
            "from ferroserve import serve; print(serve.start.__module__)",
        ])
        .env("PYTHONPATH", &target)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&import.stdout).trim(),
        "ferroserve.serve",
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
}
