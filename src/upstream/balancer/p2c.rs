//! Power of two choices: draw two distinct targets at random (in proportion
//! to their weights) and keep the cheaper. Nearly as good as scanning every
//! target for the least loaded, at constant cost, and without the herd that
//! a global "least loaded" causes. `random_two` uses in-flight requests as
//! the cost; `ewma` uses latency times load.

use super::random_u64;

/// A weighted random draw over the targets with weight above 0.
#[derive(Debug)]
pub struct WeightedDraw {
    /// Running sums of weights, one per target (equal neighbours mark weight 0).
    cumulative: Vec<u64>,
    eligible: usize,
}

impl WeightedDraw {
    /// Prepares draws for these weights.
    pub fn new(weights: &[u32]) -> WeightedDraw {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        WeightedDraw {
            cumulative,
            eligible: weights.iter().filter(|&&w| w > 0).count(),
        }
    }

    /// One weighted random target, or `None` when every weight is 0.
    pub fn draw_one(&self) -> Option<usize> {
        (self.eligible > 0).then(|| self.draw())
    }

    fn draw(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let r = random_u64() % total;
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// A weighted draw among the targets other than `a`: `a`'s slice of the
    /// weight line is cut out, so the result always differs from `a`.
    fn draw_other_than(&self, a: usize) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let lo = if a == 0 { 0 } else { self.cumulative[a - 1] };
        let width = self.cumulative[a] - lo;
        let mut r = random_u64() % (total - width);
        if r >= lo {
            r += width;
        }
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// Draws two distinct targets and returns the available one with the
    /// lower `cost`. When a draw lands on an unavailable target (ejected, or
    /// already tried), every available target is compared instead: slower,
    /// but only while part of the pool is out. `None` when none is available.
    pub fn pick_two(
        &self,
        cost: impl Fn(usize) -> f64,
        avail: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let choice = match self.eligible {
            0 => return None,
            1 => Some(self.draw()).filter(|&a| avail(a)),
            _ => {
                let a = self.draw();
                let b = self.draw_other_than(a);
                match (avail(a), avail(b)) {
                    (true, true) => Some(if cost(b) < cost(a) { b } else { a }),
                    _ => None,
                }
            }
        };
        choice.or_else(|| self.cheapest_available(&cost, &avail))
    }

    fn cheapest_available(
        &self,
        cost: &impl Fn(usize) -> f64,
        avail: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        (0..self.cumulative.len())
            .filter(|&i| self.weight(i) > 0 && avail(i))
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
    }

    fn weight(&self, i: usize) -> u64 {
        self.cumulative[i] - if i == 0 { 0 } else { self.cumulative[i - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_weights_and_skip_draining_targets() {
        let d = WeightedDraw::new(&[1, 0, 3]);
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[d.draw()] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{counts:?}");
        assert_eq!(WeightedDraw::new(&[0, 0]).pick_two(|_| 0.0, |_| true), None);
        assert_eq!(
            WeightedDraw::new(&[0, 5]).pick_two(|_| 0.0, |_| true),
            Some(1)
        );
        assert_eq!(
            WeightedDraw::new(&[0, 5]).pick_two(|_| 0.0, |_| false),
            None
        );
        let d = WeightedDraw::new(&[1, 1, 1]);
        for _ in 0..50 {
            assert_eq!(
                d.pick_two(|_| 0.0, |i| i == 2),
                Some(2),
                "only the available target"
            );
        }
    }

    #[test]
    fn the_cheaper_of_two_wins() {
        let d = WeightedDraw::new(&[1, 1]);
        for _ in 0..100 {
            assert_eq!(
                d.pick_two(|i| if i == 0 { 10.0 } else { 1.0 }, |_| true),
                Some(1)
            );
        }
    }
}
