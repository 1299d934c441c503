//! Plugin state that outlives a snapshot (key sets, token caches, password
//! verification caches), kept by a stable identity such as the JWKS URL, so
//! a reload that keeps a plugin's settings keeps its warm state. Entries no
//! snapshot uses any more are dropped after each successful apply.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Work a plugin needs done in the background while a snapshot uses it
/// (refreshing a key set). The gateway runs one task per key and stops it
/// when no snapshot needs it.
pub trait Background: Send + Sync + std::fmt::Debug {
    /// Runs until aborted.
    fn run(self: Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

type Entry = (Arc<dyn Any + Send + Sync>, u64);

/// Shared plugin state by (type, identity).
#[derive(Debug, Default)]
pub struct StateStore {
    inner: Mutex<Inner>,
    clock: crate::clock::Clock,
    /// The metric families, made with the first configuration's buckets.
    metrics: std::sync::OnceLock<Arc<crate::observability::metrics::Metrics>>,
    /// Whether the snapshot being built records metrics.
    recording: std::sync::atomic::AtomicBool,
    /// Builds only to check (`portcullis validate`): no writer or exporter
    /// threads are started and no files are opened.
    inert: bool,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(TypeId, String), Entry>,
    generation: u64,
}

impl StateStore {
    /// A store whose plugins read time from `clock` (tests pass a manual one).
    pub fn with_clock(clock: crate::clock::Clock) -> StateStore {
        StateStore {
            inner: Mutex::default(),
            clock,
            metrics: std::sync::OnceLock::new(),
            recording: std::sync::atomic::AtomicBool::new(false),
            inert: false,
        }
    }

    /// A store for checking a configuration without side effects (no log
    /// files opened, no exporter started).
    pub fn inert() -> StateStore {
        StateStore {
            inert: true,
            ..StateStore::default()
        }
    }

    /// Whether this store only checks configurations.
    pub fn is_inert(&self) -> bool {
        self.inert
    }

    /// The process's metric families. The histogram `buckets` of the first
    /// call stay for the life of the process (Prometheus series cannot
    /// change buckets); a later, different request is logged.
    pub fn metrics(&self, buckets: &[f64]) -> Arc<crate::observability::metrics::Metrics> {
        let m = self
            .metrics
            .get_or_init(|| Arc::new(crate::observability::metrics::Metrics::new(buckets)));
        if m.buckets() != buckets {
            tracing::warn!("`observability.metrics.latency_buckets` changed; new buckets apply after a restart");
        }
        m.clone()
    }

    /// The metric families, once a configuration has made them.
    pub fn metrics_handle(&self) -> Option<Arc<crate::observability::metrics::Metrics>> {
        self.metrics.get().cloned()
    }

    /// Marks whether the snapshot being built records metrics.
    pub fn set_recording(&self, on: bool) {
        self.recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The metric families when the snapshot being built records metrics
    /// (plugins pre-make their counters from them).
    pub fn recording_metrics(&self) -> Option<Arc<crate::observability::metrics::Metrics>> {
        if !self.recording.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.metrics.get().cloned()
    }

    /// The clock plugins count windows with.
    pub fn clock(&self) -> &crate::clock::Clock {
        &self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts building a snapshot: entries it asks for are marked as used.
    pub fn begin(&self) -> u64 {
        let mut g = self.lock();
        g.generation += 1;
        g.generation
    }

    /// The state of type `T` with identity `key`, created by `init` if new.
    pub fn get<T: Any + Send + Sync>(&self, key: &str, init: impl FnOnce() -> T) -> Arc<T> {
        let mut g = self.lock();
        let generation = g.generation;
        let entry = g
            .entries
            .entry((TypeId::of::<T>(), key.to_string()))
            .or_insert_with(|| (Arc::new(init()), generation));
        entry.1 = generation;
        match entry.0.clone().downcast::<T>() {
            Ok(t) => t,
            // The map is keyed by TypeId, so the entry has type T.
            Err(_) => unreachable!("state entry keyed by TypeId has another type"),
        }
    }

    /// After `generation` was applied: drops what it did not use.
    pub fn retain_generation(&self, generation: u64) {
        self.lock().entries.retain(|_, (_, g)| *g >= generation);
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_kept_by_identity_and_pruned_when_unused() {
        let s = StateStore::default();
        let g1 = s.begin();
        let a = s.get("jwks:a", || 1u32);
        let _b = s.get("jwks:b", || 2u32);
        s.retain_generation(g1);
        let g2 = s.begin();
        let a2 = s.get("jwks:a", || 9u32);
        assert!(Arc::ptr_eq(&a, &a2), "same identity, same state");
        s.retain_generation(g2);
        assert_eq!(s.len(), 1, "b was not used by the second snapshot");
        // Same key, other type: separate entries.
        let _ = s.get("jwks:a", || "text");
        assert_eq!(s.len(), 2);
    }
}
