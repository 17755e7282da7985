//! The last changes made to the app (when, what), newest first, for the dashboard.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

/// How many changes are kept.
const KEPT: usize = 200;

/// One change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Change {
    /// When it was made, in seconds since the Unix epoch.
    pub(crate) at_s: f64,
    /// What changed, in words (with why, if it failed).
    pub(crate) what: String,
}

/// The last [`KEPT`] changes.
#[derive(Default)]
pub(crate) struct History {
    changes: Mutex<VecDeque<Change>>,
}

impl History {
    /// Records a change made now.
    pub(crate) fn record(&self, what: String) {
        let at_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if changes.len() == KEPT {
            changes.pop_back();
        }
        changes.push_front(Change { at_s, what });
    }

    /// The changes, newest first.
    pub(crate) fn list(&self) -> Vec<Change> {
        let changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        changes.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_and_bounded() {
        let history = History::default();
        for i in 0..KEPT + 5 {
            history.record(format!("change {i}"));
        }
        let list = history.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].what, format!("change {}", KEPT + 4));
        assert!(list[0].at_s >= list[KEPT - 1].at_s);
    }
}
