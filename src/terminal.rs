//! What the client shows: a deploy's progress (a bar per backend on a terminal, plain lines otherwise) and status words in colour on a terminal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Whether to write colour to a stream: only to a terminal, and not when `NO_COLOR` is set
/// to anything but the empty string (no-color.org) or the terminal is `dumb`.
pub(crate) fn colour_allowed(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    is_terminal && !no_color && !dumb
}

/// The colour of a backend's, the app's or a replica's status word: green when it serves
/// as it should, yellow while it changes, red when it fails.
fn colour_of(word: &str) -> Option<&'static str> {
    match word {
        "HEALTHY" | "RUNNING" | "true" => Some(GREEN),
        "UPDATING" | "DEPLOYING" | "STARTING" | "STOPPING" | "WAITING" => Some(YELLOW),
        "UNHEALTHY" | "DEPLOY_FAILED" | "RECOVERING" | "false" => Some(RED),
        _ => None,
    }
}

/// `word` in its colour when `colour` is on (and it has one); as it is otherwise.
pub(crate) fn paint(word: &str, colour: bool) -> String {
    match colour_of(word) {
        Some(code) if colour => format!("{code}{word}{RESET}"),
        _ => word.to_owned(),
    }
}

/// The status YAML with its status words coloured: the values of `status`, `state`,
/// `ready` and a health check's `ok`. Every other byte is left as it is.
pub(crate) fn colour_yaml(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() + yaml.len() / 8);
    for line in yaml.split_inclusive('\n') {
        let (body, newline) = line
            .strip_suffix('\n')
            .map_or((line, ""), |body| (body, "\n"));
        let coloured = ["status: ", "state: ", "ready: ", "ok: "]
            .iter()
            .find_map(|key| {
                let at = body.find(key)?;
                let before = &body[..at];
                // Only a key: indentation and a list dash may come before it.
                if !before.chars().all(|c| c == ' ' || c == '-') {
                    return None;
                }
                let value = &body[at + key.len()..];
                colour_of(value).map(|_| format!("{before}{key}{}", paint(value, true)))
            });
        out.push_str(coloured.as_deref().unwrap_or(body));
        out.push_str(newline);
    }
    out
}

/// One backend's progress, as the server's status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendProgress {
    /// Its status word (`WAITING` while the server does not list it yet).
    pub(crate) status: String,
    /// Replicas ready.
    pub(crate) ready: usize,
    /// Replicas it should have.
    pub(crate) target: usize,
}

/// A plain progress line: `  echo: UPDATING 1/2 ready (0.4 s)`.
pub(crate) fn plain_line(name: &str, progress: &BackendProgress, elapsed: Duration) -> String {
    format!(
        "  {name}: {} {}/{} ready ({:.1} s)",
        progress.status,
        progress.ready,
        progress.target,
        elapsed.as_secs_f64()
    )
}

/// The bar's look: the backend's name padded to `name_width`, the bar, replicas ready of
/// those it should have, the time since the deploy began, and the status word.
pub(crate) fn bar_style(name_width: usize) -> ProgressStyle {
    let template = format!(
        "  {{prefix:{name_width}}} [{{bar:24}}] {{pos}}/{{len}} ready  {{elapsed:>4}}  {{msg}}"
    );
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Where a deploy's progress goes.
pub(crate) enum Progress {
    /// On a terminal: one bar per backend, redrawn in place.
    Bars {
        /// Each backend's bar, drawn together (a `MultiProgress`) on stderr.
        bars: HashMap<String, ProgressBar>,
        /// Whether status words are coloured.
        colour: bool,
    },
    /// Not on a terminal: a line each time a backend's status or count changes.
    Lines {
        /// When the deploy began.
        started: Instant,
        /// What was last written for each backend.
        last: HashMap<String, BackendProgress>,
    },
}

impl Progress {
    /// Progress for `backends` (name, replicas it should have): bars when `on_terminal`,
    /// else lines; `colour` paints the bars' status words.
    pub(crate) fn new<'a>(
        backends: impl IntoIterator<Item = (&'a str, usize)>,
        on_terminal: bool,
        colour: bool,
    ) -> Self {
        if !on_terminal {
            return Self::Lines {
                started: Instant::now(),
                last: HashMap::new(),
            };
        }
        Self::bars(backends, ProgressDrawTarget::stderr(), colour)
    }

    /// Bars drawn to `target`.
    fn bars<'a>(
        backends: impl IntoIterator<Item = (&'a str, usize)>,
        target: ProgressDrawTarget,
        colour: bool,
    ) -> Self {
        let backends: Vec<(&str, usize)> = backends.into_iter().collect();
        let width = backends
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let style = bar_style(width);
        let multi = MultiProgress::with_draw_target(target);
        let bars = backends
            .into_iter()
            .map(|(name, target)| {
                let bar = multi.add(ProgressBar::new(target as u64).with_style(style.clone()));
                bar.set_prefix(name.to_owned());
                bar.set_message(paint("WAITING", colour));
                (name.to_owned(), bar)
            })
            .collect();
        Self::Bars { bars, colour }
    }

    /// Shows `progress` for the backend `name`.
    pub(crate) fn show(&mut self, name: &str, progress: &BackendProgress) {
        match self {
            Self::Bars { bars, colour } => {
                if let Some(bar) = bars.get(name) {
                    bar.set_length(progress.target as u64);
                    bar.set_position(progress.ready as u64);
                    bar.set_message(paint(&progress.status, *colour));
                    bar.tick();
                }
            }
            Self::Lines { started, last } => {
                if last.get(name) != Some(progress) {
                    eprintln!("{}", plain_line(name, progress, started.elapsed()));
                    last.insert(name.to_owned(), progress.clone());
                }
            }
        }
    }

    /// Leaves the bars as they last were, so that what follows is written below them.
    pub(crate) fn finish(&self) {
        if let Self::Bars { bars, .. } = self {
            for bar in bars.values() {
                bar.abandon();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_are_coloured_only_when_asked() {
        assert_eq!(paint("HEALTHY", true), "\x1b[32mHEALTHY\x1b[0m");
        assert_eq!(paint("UPDATING", true), "\x1b[33mUPDATING\x1b[0m");
        assert_eq!(paint("DEPLOY_FAILED", true), "\x1b[31mDEPLOY_FAILED\x1b[0m");
        assert_eq!(paint("HEALTHY", false), "HEALTHY");
        assert_eq!(paint("echo#1", true), "echo#1");
    }

    #[test]
    fn the_status_yaml_is_coloured_word_by_word() {
        let yaml = "status: RUNNING\nready: true\nbackends:\n  echo:\n    status: UNHEALTHY\n    message: 'status: HEALTHY'\n    replicas:\n    - id: echo#1\n      state: RECOVERING\n      last_health_check:\n        ok: false\n";
        let coloured = colour_yaml(yaml);
        assert!(coloured.starts_with("status: \x1b[32mRUNNING\x1b[0m\nready: \x1b[32mtrue"));
        assert!(coloured.contains("    status: \x1b[31mUNHEALTHY\x1b[0m\n"));
        assert!(coloured.contains("      state: \x1b[31mRECOVERING\x1b[0m\n"));
        assert!(coloured.contains("        ok: \x1b[31mfalse\x1b[0m\n"));
        assert!(
            coloured.contains("    message: 'status: HEALTHY'\n"),
            "{coloured}"
        );
        let stripped = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace(RESET, "");
        assert_eq!(stripped, yaml, "only colour is added");
    }

    #[test]
    fn a_plain_line_says_status_count_and_time() {
        let progress = BackendProgress {
            status: "UPDATING".to_owned(),
            ready: 1,
            target: 2,
        };
        let line = plain_line("echo", &progress, Duration::from_millis(1500));
        assert_eq!(line, "  echo: UPDATING 1/2 ready (1.5 s)");
    }

    #[test]
    fn a_bar_shows_name_count_time_and_status() {
        let term = indicatif::InMemoryTerm::new(4, 100);
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let mut progress = Progress::bars([("echo", 2), ("model", 4)], target, false);
        progress.show(
            "echo",
            &BackendProgress {
                status: "UPDATING".to_owned(),
                ready: 1,
                target: 2,
            },
        );
        progress.show(
            "model",
            &BackendProgress {
                status: "HEALTHY".to_owned(),
                ready: 4,
                target: 4,
            },
        );
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.len(), 2, "{screen}");
        assert!(
            lines[0].starts_with("  echo  [============>           ] 1/2 ready"),
            "{screen}"
        );
        assert!(lines[0].trim_end().ends_with("0s  UPDATING"), "{screen}");
        assert!(
            lines[1].starts_with("  model [========================] 4/4 ready"),
            "{screen}"
        );
        assert!(lines[1].trim_end().ends_with("HEALTHY"), "{screen}");
    }
}
