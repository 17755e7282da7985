//! The route table: longest-prefix match of a request path, on path-segment boundaries.

use std::collections::HashMap;

/// Routes to values; `/api` matches `/api`, `/api/` and `/api/x`, never `/apix`.
pub(crate) struct RouteTable<T> {
    routes: HashMap<Box<str>, T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            routes: HashMap::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// Adds a normalised route (leading `/`, no trailing `/` but for `/` itself).
    pub(crate) fn insert(&mut self, route: &str, value: T) {
        self.routes.insert(route.into(), value);
    }

    /// The value of the longest route that is `path` or a segment prefix of it.
    pub(crate) fn lookup(&self, path: &str) -> Option<&T> {
        if self.routes.is_empty() {
            return None;
        }
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(value) = self.routes.get(key) {
                return Some(value);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_segment_prefix_wins() {
        let mut table = RouteTable::default();
        table.insert("/api", "api");
        table.insert("/api/v2", "v2");
        assert_eq!(table.lookup("/api"), Some(&"api"));
        assert_eq!(table.lookup("/api/"), Some(&"api"));
        assert_eq!(table.lookup("/api/v1/x"), Some(&"api"));
        assert_eq!(table.lookup("/api/v2"), Some(&"v2"));
        assert_eq!(table.lookup("/api/v2/models/x"), Some(&"v2"));
        assert_eq!(table.lookup("/apix"), None);
        assert_eq!(table.lookup("/"), None);
    }

    #[test]
    fn the_root_route_catches_everything_else() {
        let mut table = RouteTable::default();
        table.insert("/", "root");
        table.insert("/a", "a");
        assert_eq!(table.lookup("/"), Some(&"root"));
        assert_eq!(table.lookup("/b/c"), Some(&"root"));
        assert_eq!(table.lookup("/a/c"), Some(&"a"));
    }
}
