//! In-process counters for limits whose `store` is `local`: sharded maps
//! (one short lock per check, never a global one) with a bound on the number
//! of keys. Keys whose state has gone back to "fresh" are forgotten by a
//! periodic sweep; when a shard is full of live keys, the one closest to
//! expiry among a small sample is evicted (as Redis's approximated LRU does),
//! so a flood of distinct keys costs bounded memory and forgives a few
//! keys early rather than growing without bound.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::algorithm::{Cell, Decision, Rate};

/// How many shards a store has; a power of two.
const SHARDS: usize = 64;
/// How often a shard forgets its expired keys.
const SWEEP_EVERY: u64 = 10_000_000_000;
/// How many keys are looked at to choose one to evict.
const EVICTION_SAMPLE: usize = 16;

/// The counters of every key, for one set of limits.
#[derive(Debug)]
pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<str>, Entry>,
    next_sweep: u64,
}

#[derive(Debug)]
struct Entry {
    cells: Box<[Cell]>,
    expires: u64,
}

impl LocalStore {
    /// A store that keeps at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize & (SHARDS - 1);
        // A shard holds plain counters; a panic mid-update leaves them usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks one request against every rate at once: when all admit it,
    /// all count it; when any refuses, none does. `out` gets one decision
    /// per rate, in order. Returns whether the request was admitted.
    pub fn check(&self, key: &str, now: u64, rates: &[Rate], out: &mut Vec<Decision>) -> bool {
        self.update(key, now, rates.len(), |cells| {
            let first = out.len();
            let mut all = true;
            for (rate, cell) in rates.iter().zip(cells.iter_mut()) {
                let d = rate.check(cell, now);
                all &= d.allowed;
                out.push(d);
            }
            if !all {
                // Window rollovers stay (a refused request sees fresh counts
                // next time); only the counting itself is taken back.
                for ((rate, cell), d) in rates.iter().zip(cells.iter_mut()).zip(&out[first..]) {
                    if d.allowed {
                        rate.refund(cell, now);
                    }
                }
            }
            let expires = rates
                .iter()
                .zip(cells.iter())
                .map(|(r, c)| r.expires(c))
                .max()
                .unwrap_or(0);
            (all, expires)
        })
    }

    /// Runs `f` on the `n` cells of `key` under the shard's lock; `f`
    /// returns its result and when the cells are fresh again (they may then
    /// be forgotten).
    pub fn update<R>(
        &self,
        key: &str,
        now: u64,
        n: usize,
        f: impl FnOnce(&mut [Cell]) -> (R, u64),
    ) -> R {
        let mut shard = self.shard(key);
        if now >= shard.next_sweep {
            shard.map.retain(|_, e| e.expires > now);
            shard.next_sweep = now.saturating_add(SWEEP_EVERY);
        }
        if !shard.map.contains_key(key) {
            if shard.map.len() >= self.per_shard {
                shard.map.retain(|_, e| e.expires > now);
                if shard.map.len() >= self.per_shard {
                    self.evict_one(&mut shard);
                }
            }
            let fresh = Entry {
                cells: vec![Cell::default(); n].into_boxed_slice(),
                expires: 0,
            };
            shard.map.insert(Box::from(key), fresh);
        }
        let Some(entry) = shard.map.get_mut(key) else {
            unreachable!("the key was inserted above under the same lock")
        };
        if entry.cells.len() != n {
            entry.cells = vec![Cell::default(); n].into_boxed_slice();
        }
        let (r, expires) = f(&mut entry.cells);
        entry.expires = expires;
        r
    }

    /// Takes back a request this store admitted at `now` (a limit kept
    /// elsewhere refused it).
    pub fn refund(&self, key: &str, now: u64, rates: &[Rate]) {
        self.modify(key, |cells| {
            for (rate, cell) in rates.iter().zip(cells.iter_mut()) {
                rate.refund(cell, now);
            }
        });
    }

    /// Runs `f` on the cells of `key` if it is kept (never inserts).
    pub fn modify(&self, key: &str, f: impl FnOnce(&mut [Cell])) {
        if let Some(e) = self.shard(key).map.get_mut(key) {
            f(&mut e.cells);
        }
    }

    /// Every key for which `f` returns something, with that; one shard
    /// locked at a time.
    pub fn collect<T>(&self, mut f: impl FnMut(&[Cell]) -> Option<T>) -> Vec<(Box<str>, T)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, e) in &shard.map {
                if let Some(t) = f(&e.cells) {
                    out.push((k.clone(), t));
                }
            }
        }
        out
    }

    fn evict_one(&self, shard: &mut Shard) {
        let victim = shard
            .map
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, e)| e.expires)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            shard.map.remove(&k);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many keys are kept now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many live keys were evicted to stay within the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::algorithm::Algorithm;
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * SEC;

    fn rates() -> Vec<Rate> {
        vec![
            Rate {
                algorithm: Algorithm::FixedWindow,
                limit: 2,
                window: SEC,
                burst: 2,
            },
            Rate {
                algorithm: Algorithm::FixedWindow,
                limit: 3,
                window: 60 * SEC,
                burst: 3,
            },
        ]
    }

    #[test]
    fn a_refused_request_counts_against_no_limit() {
        let s = LocalStore::new(100);
        let r = rates();
        let mut out = Vec::new();
        let admitted: Vec<bool> = (0..4).map(|_| s.check("k", T0, &r, &mut out)).collect();
        assert_eq!(admitted, [true, true, false, false]);
        // Next second: the per-second limit has room, the minute limit one.
        assert!(s.check("k", T0 + SEC, &r, &mut out));
        assert!(!s.check("k", T0 + SEC, &r, &mut out), "3 per minute");
        s.refund("k", T0 + SEC, &r);
        assert!(s.check("k", T0 + SEC + 1, &r, &mut out));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_bounded() {
        let s = LocalStore::new(1_000);
        let r = rates();
        let mut out = Vec::new();
        for i in 0..100_000u64 {
            out.clear();
            s.check(&format!("key-{i}"), T0 + i, &r, &mut out);
        }
        assert!(s.len() <= 1_000 + SHARDS, "{} keys kept", s.len());
        assert!(s.evicted() > 90_000);
    }

    #[test]
    fn expired_keys_are_swept() {
        let s = LocalStore::new(10_000);
        let r = rates();
        let mut out = Vec::new();
        for i in 0..500 {
            s.check(&format!("key-{i}"), T0, &r, &mut out);
        }
        assert_eq!(s.len(), 500);
        // Each shard sweeps when it is next used; 2,000 keys touch all 64.
        for i in 0..2_000 {
            s.check(&format!("late-{i}"), T0 + 120 * SEC, &r, &mut out);
        }
        assert_eq!(s.len(), 2_000, "the early keys' windows are over");
        assert_eq!(s.evicted(), 0);
    }
}
