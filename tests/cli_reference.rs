//! `docs/cli.md` is the reference of the `ferroserve` command: each `` ## `ferroserve X` ``
//! section's first `text` block is `ferroserve X --help`, verbatim, checked here so the page
//! cannot drift from the binary. After changing a command or a flag, rewrite the blocks with
//! `FERROSERVE_BLESS=1 cargo test --test cli_reference` and read the diff. Also: the log
//! level's flag, variable and errors.
#![cfg(feature = "cluster")] // the cluster flags are part of the reference

mod common;

use std::process::Command;

use common::ferroserve_bin;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md");

/// `ferroserve ARGS --help` as a user sees it off a terminal, with no `FERROSERVE_*`
/// variables set (clap shows their values).
fn help(args: &[&str]) -> String {
    let output = Command::new(ferroserve_bin())
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{args:?} --help: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The subcommands `ferroserve --help` lists (not `help`).
fn commands() -> Vec<String> {
    let top = help(&[]);
    top.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A command's line, not the wrapped rest of its description.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// `page` with each section's first `text` block replaced by that command's help; and the
/// commands whose section was found.
fn regenerate(page: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(page.len());
    let mut seen = Vec::new();
    let mut pending: Option<String> = None;
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        if let Some(command) = line
            .strip_prefix("## `ferroserve")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            pending = Some(command.trim().to_owned());
        } else if line == "```text"
            && let Some(command) = pending.take()
        {
            let args: Vec<&str> = command.split_whitespace().collect();
            out.push_str(&help(&args));
            for skipped in lines.by_ref() {
                if skipped == "```" {
                    break;
                }
            }
            out.push_str("```\n");
            seen.push(command);
        }
    }
    (out, seen)
}

#[test]
fn the_cli_page_is_the_help_of_every_command() {
    let page = std::fs::read_to_string(PAGE).expect("docs/cli.md");
    let (expected, seen) = regenerate(&page);
    let mut wanted = vec![String::new()];
    wanted.extend(commands());
    for command in &wanted {
        assert!(
            seen.contains(command),
            "docs/cli.md has no section `## `ferroserve {command}`` with a ```text block"
        );
    }
    if expected != page {
        if std::env::var_os("FERROSERVE_BLESS").is_some() {
            std::fs::write(PAGE, &expected).expect("write docs/cli.md");
            return;
        }
        let line = page
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or(page.lines().count().min(expected.lines().count()), |i| i);
        panic!(
            "docs/cli.md differs from the binary's --help from line {}:\n  page: {:?}\n  help: {:?}\n\
             Rewrite it with FERROSERVE_BLESS=1 cargo test --test cli_reference",
            line + 1,
            page.lines().nth(line),
            expected.lines().nth(line)
        );
    }
}

/// `--log-level` sets what is logged, over `FERROSERVE_LOG`; a filter that is not one is
/// refused with exit 2, from either.
#[test]
fn the_log_level_comes_from_the_flag_over_the_environment() {
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.yaml");
    let run = |level: Option<&str>, env: &str| {
        let mut command = Command::new(ferroserve_bin());
        command
            .args(["check", app, "--no-import"])
            .env("FERROSERVE_LOG", env);
        if let Some(level) = level {
            command.args(["--log-level", level]);
        }
        command.output().expect("the binary runs")
    };
    let ok = run(Some("debug"), "not[a filter");
    assert!(ok.status.success(), "{ok:?}");
    // A server told `debug` by the flag and `warn` by the variable logs debug lines.
    let server = common::spawn_listening(
        &ferroserve_bin(),
        &["run", app, "--port", "0", "--log-level", "debug"],
        &[("FERROSERVE_LOG", "warn")],
        None,
    );
    server.stderr_with(" DEBUG ");
    assert_eq!(server.terminate().code(), Some(0));
    for bad in [run(None, "not[a filter"), run(Some("x=["), "info")] {
        assert_eq!(bad.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            stderr.contains("error: --log-level (or FERROSERVE_LOG)")
                && stderr.contains("is not a level or filter"),
            "{stderr}"
        );
    }
}
