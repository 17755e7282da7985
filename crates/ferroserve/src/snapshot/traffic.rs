//! Weighted choice: how an endpoint's traffic policy picks a backend.

/// Items with weights; [`WeightedChoice::choose`] picks one with probability weight / sum.
pub(crate) struct WeightedChoice<T> {
    /// (cumulative weight, item), cumulative weights rising to the sum.
    items: Box<[(f64, T)]>,
    total: f64,
}

impl<T> WeightedChoice<T> {
    /// Items with their weights (each ≥ 0; at least one > 0).
    pub(crate) fn new(weighted: impl IntoIterator<Item = (f64, T)>) -> Self {
        let mut total = 0.0;
        let items = weighted
            .into_iter()
            .map(|(w, item)| {
                total += w.max(0.0);
                (total, item)
            })
            .collect();
        Self { items, total }
    }

    /// Picks one at random.
    pub(crate) fn choose(&self) -> &T {
        if self.items.len() == 1 {
            return &self.items[0].1;
        }
        self.choose_at(fastrand::f64())
    }

    /// Picks, by weight, among the items `keep` accepts, at `point` in [0, 1); `None` when
    /// it accepts none with a weight above 0. For failover: O(n), off the common path.
    pub(crate) fn choose_among(&self, point: f64, keep: impl Fn(&T) -> bool) -> Option<&T> {
        let mut previous = 0.0;
        let kept: Vec<(f64, &T)> = self
            .items
            .iter()
            .filter_map(|(cumulative, item)| {
                let weight = cumulative - previous;
                previous = *cumulative;
                (weight > 0.0 && keep(item)).then_some((weight, item))
            })
            .collect();
        let total: f64 = kept.iter().map(|(w, _)| w).sum();
        let mut target = point * total;
        for (weight, item) in &kept {
            if target < *weight {
                return Some(item);
            }
            target -= weight;
        }
        kept.last().map(|(_, item)| *item)
    }

    /// Picks the item at `point` in [0, 1): the same point always picks the same item,
    /// which makes a shard key's choice sticky.
    pub(crate) fn choose_at(&self, point: f64) -> &T {
        let target = point * self.total;
        let index = self
            .items
            .partition_point(|&(cumulative, _)| cumulative <= target);
        let index = index.min(self.items.len() - 1);
        // Never land on a zero-weight item at the end.
        let mut i = index;
        while i > 0 && self.items[i].0 == self.items[i - 1].0 {
            i -= 1;
        }
        &self.items[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_weights() {
        let choice = WeightedChoice::new([(0.7, 'a'), (0.0, 'z'), (0.2, 'b'), (0.1, 'c')]);
        let draws = 200_000;
        let mut counts = [0usize; 3];
        for _ in 0..draws {
            match choice.choose() {
                'a' => counts[0] += 1,
                'b' => counts[1] += 1,
                'c' => counts[2] += 1,
                other => panic!("picked {other}, which has weight 0"),
            }
        }
        for (count, expected) in counts.iter().zip([0.7, 0.2, 0.1]) {
            let share = *count as f64 / draws as f64;
            assert!(
                (share - expected).abs() < 0.01,
                "share {share} for weight {expected}"
            );
        }
    }

    #[test]
    fn points_map_to_fixed_items() {
        let choice = WeightedChoice::new([(0.5, 1), (0.5, 2), (0.0, 3)]);
        assert_eq!(*choice.choose_at(0.0), 1);
        assert_eq!(*choice.choose_at(0.49), 1);
        assert_eq!(*choice.choose_at(0.5), 2);
        assert_eq!(*choice.choose_at(0.999_999), 2);
    }

    #[test]
    fn failover_picks_among_the_kept_by_weight() {
        let choice = WeightedChoice::new([(0.6, 'a'), (0.3, 'b'), (0.0, 'z'), (0.1, 'c')]);
        assert_eq!(choice.choose_among(0.5, |c| *c != 'a'), Some(&'b'));
        assert_eq!(choice.choose_among(0.74, |c| *c != 'a'), Some(&'b'));
        assert_eq!(choice.choose_among(0.76, |c| *c != 'a'), Some(&'c'));
        assert_eq!(
            choice.choose_among(0.99, |c| *c == 'z'),
            None,
            "weight 0 never"
        );
        assert_eq!(choice.choose_among(0.5, |_| false), None);
    }

    #[test]
    fn one_item_is_always_chosen() {
        let choice = WeightedChoice::new([(1.0, "only")]);
        assert!((0..100).all(|_| *choice.choose() == "only"));
    }
}
