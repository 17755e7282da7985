//! Placement: which node runs how many replicas of each backend, by resources, spread across nodes, and stable (a replica stays where it is while it fits).

use std::collections::BTreeMap;

use super::model::{NodeInfo, Placement};

/// What one backend asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// Its name.
    pub backend: String,
    /// Its replica count.
    pub replicas: usize,
    /// CPUs each replica reserves.
    pub cpus: f64,
    /// GPUs each replica reserves.
    pub gpus: f64,
    /// Memory each replica reserves, in bytes.
    pub memory_bytes: u64,
    /// The most replicas of it one node runs.
    pub max_per_node: Option<usize>,
}

/// What is left of one node while replicas are placed.
struct Room {
    cpus: f64,
    gpus: f64,
    memory: u64,
    total: usize,
}

impl Room {
    fn fits(&self, d: &Demand) -> bool {
        // A little slack, so that 0.1 × 10 fits in 1.0.
        self.cpus + 1e-9 >= d.cpus && self.gpus + 1e-9 >= d.gpus && self.memory >= d.memory_bytes
    }

    fn take(&mut self, d: &Demand) {
        self.cpus -= d.cpus;
        self.gpus -= d.gpus;
        self.memory = self.memory.saturating_sub(d.memory_bytes);
        self.total += 1;
    }
}

/// Places `demands` on `nodes`. A replica in `previous` stays on its node while the node
/// lives, has room, and runs no more than its fair share of the backend (its replicas
/// over the live nodes, rounded up: a node that joins takes over some); the others go, one at a time, to the node with the fewest replicas
/// of that backend (then the fewest in all, then by name) that has room and is under the
/// backend's `max_per_node`. What fits nowhere is `unplaced`.
pub fn place(demands: &[Demand], nodes: &[NodeInfo], previous: &Placement) -> Placement {
    let mut rooms: BTreeMap<&str, Room> = nodes
        .iter()
        .map(|n| {
            let room = Room {
                cpus: n.cpus,
                gpus: n.gpus,
                memory: n.memory_bytes,
                total: 0,
            };
            (n.name.as_str(), room)
        })
        .collect();
    let mut placement = Placement::default();
    // First what stays, for every backend, so that moves are not forced by order.
    for d in demands {
        let fair = d.replicas.div_ceil(nodes.len().max(1));
        let cap = d.max_per_node.unwrap_or(usize::MAX).min(fair.max(1));
        let mut kept: BTreeMap<String, usize> = previous
            .backends
            .get(&d.backend)
            .into_iter()
            .flatten()
            .filter(|(node, _)| rooms.contains_key(node.as_str()))
            .map(|(node, &n)| (node.clone(), n.min(cap)))
            .collect();
        // Scaling down: take from the nodes that run the most.
        while kept.values().sum::<usize>() > d.replicas {
            let Some((node, _)) = kept
                .iter()
                .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
                .map(|(name, n)| (name.clone(), *n))
            else {
                break;
            };
            if let Some(n) = kept.get_mut(&node) {
                *n -= 1;
            }
        }
        let mut staying = BTreeMap::new();
        for (node, n) in kept {
            let Some(room) = rooms.get_mut(node.as_str()) else {
                continue;
            };
            let mut placed = 0;
            while placed < n && room.fits(d) {
                room.take(d);
                placed += 1;
            }
            if placed > 0 {
                staying.insert(node, placed);
            }
        }
        placement.backends.insert(d.backend.clone(), staying);
    }
    for d in demands {
        let cap = d.max_per_node.unwrap_or(usize::MAX);
        let counts = placement.backends.entry(d.backend.clone()).or_default();
        let mut missing = d.replicas.saturating_sub(counts.values().sum());
        while missing > 0 {
            let best = rooms
                .iter()
                .filter(|(name, room)| {
                    room.fits(d) && counts.get(**name).copied().unwrap_or(0) < cap
                })
                .min_by_key(|(name, room)| {
                    (counts.get(**name).copied().unwrap_or(0), room.total, **name)
                })
                .map(|(name, _)| (*name).to_owned());
            let Some(node) = best else {
                placement.unplaced.insert(d.backend.clone(), missing);
                break;
            };
            if let Some(room) = rooms.get_mut(node.as_str()) {
                room.take(d);
            }
            *counts.entry(node).or_default() += 1;
            missing -= 1;
        }
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpus: f64, gpus: f64) -> NodeInfo {
        NodeInfo {
            name: name.to_owned(),
            peer: "127.0.0.1:1".parse().expect("addr"),
            proxy: None,
            cpus,
            memory_bytes: 1 << 30,
            gpus,
        }
    }

    fn demand(backend: &str, replicas: usize) -> Demand {
        Demand {
            backend: backend.to_owned(),
            replicas,
            cpus: 0.0,
            gpus: 0.0,
            memory_bytes: 0,
            max_per_node: None,
        }
    }

    fn counts(p: &Placement, backend: &str) -> Vec<(String, usize)> {
        p.backends[backend]
            .iter()
            .map(|(n, c)| (n.clone(), *c))
            .collect()
    }

    #[test]
    fn spreads_replicas_across_nodes() {
        let nodes = [
            node("a", 2.0, 0.0),
            node("b", 2.0, 0.0),
            node("c", 2.0, 0.0),
        ];
        let p = place(
            &[demand("m", 4), demand("n", 2)],
            &nodes,
            &Placement::default(),
        );
        assert_eq!(
            counts(&p, "m"),
            [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]
        );
        // `n` goes first where fewest replicas run in all.
        assert_eq!(counts(&p, "n"), [("b".into(), 1), ("c".into(), 1)]);
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn respects_resources_and_the_per_node_cap() {
        let nodes = [node("a", 2.0, 1.0), node("b", 1.0, 0.0)];
        let gpu = Demand {
            gpus: 1.0,
            cpus: 1.0,
            ..demand("gpu", 2)
        };
        let capped = Demand {
            max_per_node: Some(1),
            ..demand("capped", 3)
        };
        let p = place(&[gpu, capped], &nodes, &Placement::default());
        assert_eq!(counts(&p, "gpu"), [("a".into(), 1)]);
        assert_eq!(p.unplaced.get("gpu"), Some(&1));
        assert_eq!(counts(&p, "capped"), [("a".into(), 1), ("b".into(), 1)]);
        assert_eq!(p.unplaced.get("capped"), Some(&1));
    }

    #[test]
    fn cpus_bound_how_many_fit() {
        let nodes = [node("a", 2.0, 0.0), node("b", 2.0, 0.0)];
        let d = Demand {
            cpus: 0.5,
            ..demand("m", 9)
        };
        let p = place(&[d], &nodes, &Placement::default());
        assert_eq!(counts(&p, "m"), [("a".into(), 4), ("b".into(), 4)]);
        assert_eq!(p.unplaced.get("m"), Some(&1));
    }

    #[test]
    fn replicas_stay_where_they_are_and_move_off_dead_nodes() {
        let three = [
            node("a", 2.0, 0.0),
            node("b", 2.0, 0.0),
            node("c", 2.0, 0.0),
        ];
        let first = place(&[demand("m", 3)], &three, &Placement::default());
        assert_eq!(
            counts(&first, "m"),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
        // Node b dies: its replica goes to the node with the fewest, a stays, c stays.
        let two = [node("a", 2.0, 0.0), node("c", 2.0, 0.0)];
        let second = place(&[demand("m", 3)], &two, &first);
        assert_eq!(counts(&second, "m"), [("a".into(), 2), ("c".into(), 1)]);
        // b is back: nothing moves (stability), but a new replica goes to b.
        let third = place(&[demand("m", 4)], &three, &second);
        assert_eq!(
            counts(&third, "m"),
            [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]
        );
    }

    #[test]
    fn nodes_that_join_take_their_share() {
        let one = [node("a", 2.0, 0.0)];
        let first = place(&[demand("m", 3)], &one, &Placement::default());
        assert_eq!(counts(&first, "m"), [("a".into(), 3)]);
        let three = [
            node("a", 2.0, 0.0),
            node("b", 2.0, 0.0),
            node("c", 2.0, 0.0),
        ];
        let second = place(&[demand("m", 3)], &three, &first);
        assert_eq!(
            counts(&second, "m"),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
    }

    #[test]
    fn scaling_down_takes_from_the_busiest_node() {
        let nodes = [node("a", 2.0, 0.0), node("b", 2.0, 0.0)];
        let before = place(&[demand("m", 5)], &nodes, &Placement::default());
        assert_eq!(counts(&before, "m"), [("a".into(), 3), ("b".into(), 2)]);
        let after = place(&[demand("m", 2)], &nodes, &before);
        assert_eq!(counts(&after, "m"), [("a".into(), 1), ("b".into(), 1)]);
    }

    #[test]
    fn no_nodes_places_nothing() {
        let p = place(&[demand("m", 2)], &[], &Placement::default());
        assert_eq!(p.unplaced.get("m"), Some(&2));
        assert!(p.backends["m"].is_empty());
    }
}
