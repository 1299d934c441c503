//! Least requests: the target with the fewest requests in flight relative to
//! its weight. The scan starts at a random target so that ties (an idle pool)
//! spread instead of all landing on the first target.

use std::sync::Arc;

use super::random_u64;
use crate::upstream::stats::TargetStats;

/// Picks the least loaded target, or `None` when every weight is 0.
pub fn pick(
    weights: &[u32],
    stats: &[Arc<TargetStats>],
    avail: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    let start = (random_u64() % n as u64) as usize;
    let mut best: Option<(usize, f64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        if weights[i] == 0 || !avail(i) {
            continue;
        }
        let load = (stats[i].in_flight() as f64 + 1.0) / weights[i] as f64;
        if best.is_none_or(|(_, b)| load < b) {
            best = Some((i, load));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_least_loaded_per_weight() {
        let stats: Vec<Arc<TargetStats>> = (0..3).map(|_| Arc::default()).collect();
        let _busy: Vec<_> = (0..4).map(|_| stats[0].start()).collect();
        let _one = stats[1].start();
        assert_eq!(pick(&[1, 1, 1], &stats, |_| true), Some(2));
        assert_eq!(
            pick(&[1, 1, 1], &stats, |i| i != 2),
            Some(1),
            "unavailable targets are skipped"
        );
        // Target 0 has 4 in flight but weight 10: (4+1)/10 beats (1+1)/1 and (0+1)/1.
        assert_eq!(pick(&[10, 1, 1], &stats, |_| true), Some(0));
        assert_eq!(
            pick(&[1, 1, 0], &stats, |_| true),
            Some(1),
            "weight 0 drains"
        );
        assert_eq!(pick(&[0, 0, 0], &stats, |_| true), None);
    }
}
