//! Smooth weighted round robin, as in nginx: every pick adds each target's
//! weight to its running score, takes the highest and subtracts the total
//! from it. Weights `5, 1, 1` give `a a b a c a a`, never five `a` in a row.
//! Each worker keeps its own scores, so picks never contend across threads.

use std::sync::Mutex;

use crate::upstream::pool::worker_index;

/// Per-worker running scores.
#[derive(Debug)]
pub struct SmoothWrr {
    scores: Vec<Mutex<Vec<i64>>>,
}

impl SmoothWrr {
    /// Scores for `weights.len()` targets on each of `workers` workers.
    pub fn new(weights: &[u32], workers: usize) -> SmoothWrr {
        SmoothWrr {
            scores: (0..workers.max(1))
                .map(|_| Mutex::new(vec![0; weights.len()]))
                .collect(),
        }
    }

    /// The next available target, or `None` when none has weight above 0.
    pub fn pick(&self, weights: &[u32], avail: impl Fn(usize) -> bool) -> Option<usize> {
        let slot = &self.scores[worker_index() % self.scores.len()];
        let mut scores = slot.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, &w) in weights.iter().enumerate() {
            if w == 0 || !avail(i) {
                continue;
            }
            scores[i] += i64::from(w);
            total += i64::from(w);
            if best.is_none_or(|b| scores[i] > scores[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        scores[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], n: usize) -> Vec<usize> {
        let rr = SmoothWrr::new(weights, 1);
        (0..n)
            .map(|_| rr.pick(weights, |_| true).expect("a target"))
            .collect()
    }

    #[test]
    fn interleaves_by_weight() {
        assert_eq!(sequence(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(sequence(&[1, 1], 4), vec![0, 1, 0, 1]);
        let s = sequence(&[3, 0, 1], 8);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 6);
        assert!(!s.contains(&1), "weight 0 drains");
        assert!(SmoothWrr::new(&[0, 0], 1).pick(&[0, 0], |_| true).is_none());
        let rr = SmoothWrr::new(&[1, 1, 1], 1);
        for _ in 0..6 {
            assert_ne!(
                rr.pick(&[1, 1, 1], |i| i != 1),
                Some(1),
                "unavailable targets are skipped"
            );
        }
    }
}
