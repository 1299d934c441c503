//! `store: hybrid`: fixed-window counters decided in this process and
//! synchronised with Redis in batches, for rates too high to pay a Redis
//! round trip per request. Each node admits while
//! `what Redis said at the last sync + what it admitted since` stays under
//! the limit; every `sync_interval` it adds its new admissions to the
//! shared counter (`INCRBY`) and learns the total of all nodes.
//!
//! The trade-off: between two syncs a node does not see the other nodes'
//! admissions, so together they can pass the limit by up to about
//! `(nodes − 1) × (requests one node admits per sync_interval)` per window.
//! Redis down: nodes keep counting alone (each up to the limit) and sync
//! again when it returns.

use std::sync::Arc;
use std::time::Duration;

use super::algorithm::{Cell, Decision, Rate};
use super::local::LocalStore;
use super::redis::Redis;
use crate::clock::Clock;
use crate::plugins::Background;

/// Adds one node's admissions to a window's shared counter; returns the
/// total. `KEYS[1]`: the window's counter; `ARGV`: count, TTL (ms).
static SYNC: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local t = redis.call('INCRBY', KEYS[1], ARGV[1]) \
         redis.call('PEXPIRE', KEYS[1], ARGV[2]) return {t}",
    )
});

/// After an admission, how many syncs a key takes part in even with
/// nothing new to send: the other nodes' last admissions reach Redis up to
/// one interval later, and this node must learn them.
const REFRESHES: u64 = 10;

/// Hybrid counters of one limit set: two cells per limit, the first with
/// `a` = window index + 1, `b` = admitted here since the last sync, `c` =
/// the shared total then; the second's `a` counts the refreshes left.
#[derive(Debug)]
pub struct HybridStore {
    local: LocalStore,
    rates: Vec<Rate>,
    redis: Arc<Redis>,
    namespace: String,
    interval: Duration,
    clock: Clock,
}

impl HybridStore {
    /// A store for `rates` (fixed windows), syncing under `namespace`.
    pub fn new(
        rates: Vec<Rate>,
        redis: Arc<Redis>,
        namespace: String,
        interval: Duration,
        max_keys: usize,
        clock: Clock,
    ) -> HybridStore {
        HybridStore {
            local: LocalStore::new(max_keys),
            rates,
            redis,
            namespace,
            interval,
            clock,
        }
    }

    /// The limits it counts.
    pub fn rates(&self) -> &[Rate] {
        &self.rates
    }

    /// Decides one request from local knowledge; counts it in every limit
    /// or none. Pushes one decision per limit to `out`.
    pub fn check(&self, key: &str, now: u64, out: &mut Vec<Decision>) -> bool {
        let rates = &self.rates;
        self.local.update(key, now, 2 * rates.len(), |cells| {
            let mut all = true;
            for (rate, pair) in rates.iter().zip(cells.chunks_mut(2)) {
                let cell = &mut pair[0];
                let index = now / rate.window;
                if cell.a != index + 1 {
                    *cell = Cell {
                        a: index + 1,
                        b: 0,
                        c: 0,
                    };
                }
                let used = cell.b + cell.c;
                let reset = (index + 1) * rate.window - now;
                let allowed = used < rate.limit;
                all &= allowed;
                out.push(Decision {
                    allowed,
                    remaining: rate.limit.saturating_sub(used + 1),
                    reset,
                    retry_after: if allowed { 0 } else { reset },
                });
            }
            if all {
                for pair in cells.chunks_mut(2) {
                    pair[0].b += 1;
                    pair[1].a = REFRESHES;
                }
            }
            let expires = rates
                .iter()
                .zip(cells.chunks(2))
                .map(|(r, pair)| pair[0].a * r.window)
                .max()
                .unwrap_or(0);
            (all, expires)
        })
    }

    /// Takes back a request admitted at `now` (a Redis limit refused it).
    pub fn refund(&self, key: &str, now: u64) {
        self.local.modify(key, |cells| {
            for (rate, pair) in self.rates.iter().zip(cells.chunks_mut(2)) {
                if pair[0].a == now / rate.window + 1 {
                    pair[0].b = pair[0].b.saturating_sub(1);
                }
            }
        });
    }

    /// Sends every key's admissions since the last sync and learns the
    /// totals. A failed key keeps its count for the next sync.
    pub async fn sync(self: &Arc<Self>) {
        let now = self.clock.now_nanos();
        let due = |pair: &[Cell]| pair[0].a != 0 && (pair[0].b > 0 || pair[1].a > 0);
        let dirty = self
            .local
            .collect(|cells| cells.chunks(2).any(due).then(|| cells.to_vec()));
        let mut calls = tokio::task::JoinSet::new();
        for (key, cells) in dirty {
            for (i, (rate, pair)) in self.rates.iter().zip(cells.chunks(2)).enumerate() {
                if !due(pair) {
                    continue;
                }
                let cell = &pair[0];
                let index = cell.a - 1;
                let end_ms = (index + 1) * rate.window / 1_000_000;
                let ttl_ms = end_ms.saturating_sub(now / 1_000_000) + rate.window / 1_000_000;
                let rkey = format!(
                    "{}:{i}:{}:{index}:{key}",
                    self.namespace,
                    rate.window / 1_000_000
                );
                let me = self.clone();
                let (key, sent) = (key.clone(), cell.b);
                calls.spawn(async move {
                    let total = me.redis.eval(&SYNC, &[rkey], &[sent, ttl_ms.max(1)]).await;
                    (key, i, index, sent, total)
                });
            }
        }
        while let Some(Ok((key, i, index, sent, total))) = calls.join_next().await {
            match total {
                Ok(t) if t.len() == 1 => {
                    let total = t[0].max(0) as u64;
                    self.local.modify(&key, |cells| {
                        if let Some(pair) = cells.chunks_mut(2).nth(i) {
                            if pair[0].a == index + 1 {
                                pair[0].b = pair[0].b.saturating_sub(sent);
                                pair[0].c = total;
                            }
                            pair[1].a = pair[1].a.saturating_sub(1);
                        }
                    });
                }
                Ok(_) => {}
                Err(e) => self
                    .redis
                    .warn("rate_limit", "counted by this node alone", &e),
            }
        }
    }
}

impl Background for HybridStore {
    /// Syncs every `sync_interval` while a snapshot uses the store.
    fn run(self: Arc<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.sync().await;
            }
        })
    }
}
