//! Metrics read at scrape time rather than counted per request: the state
//! of upstream targets and circuit breakers, open connections, the loaded
//! configuration, and the process (CPU, memory, file descriptors, from
//! `/proc`). Read from one snapshot, so a scrape during a reload sees
//! either the old or the new configuration, never a mix.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::metrics::Labels;
use crate::snapshot::Snapshot;
use crate::upstream::stats::now_ns;

type FloatGauge = Gauge<f64, AtomicU64>;

/// What the scrape reads besides the snapshot.
pub struct Live {
    /// Client connections open now.
    pub connections: usize,
    /// When the process started.
    pub started: SystemTime,
}

/// Appends the scrape-time metrics in the Prometheus text format.
pub fn encode(snap: &Snapshot, live: &Live, out: &mut String) -> std::fmt::Result {
    let mut r = Registry::with_prefix("portcullis");
    let connections: Gauge = Gauge::default();
    connections.set(live.connections as i64);
    r.register(
        "connections_active",
        "Client connections open now",
        connections,
    );
    let revision: Gauge = Gauge::default();
    revision.set(snap.revision as i64);
    r.register(
        "config_revision",
        "Revision of the configuration serving now",
        revision,
    );
    let loaded: FloatGauge = Gauge::default();
    loaded.set(unix_seconds(snap.built_at));
    r.register(
        "config_loaded_timestamp_seconds",
        "When the configuration serving now was loaded (Unix time)",
        loaded,
    );

    let healthy: Family<Labels<2>, Gauge> = Family::default();
    let in_flight: Family<Labels<2>, Gauge> = Family::default();
    let ejections: Family<Labels<2>, Counter> = Family::default();
    let circuit: Family<Labels<1>, Gauge> = Family::default();
    let available: Family<Labels<1>, Gauge> = Family::default();
    let now = now_ns();
    for u in &snap.upstreams {
        let mut up = 0;
        for (i, (t, s)) in u.targets.iter().zip(&u.stats).enumerate() {
            let labels = [("upstream", u.name.clone()), ("target", t.address.clone())];
            let ok = u.takes_traffic(i, now);
            up += i64::from(ok);
            healthy.get_or_create(&labels).set(i64::from(ok));
            in_flight
                .get_or_create(&labels)
                .set(i64::from(s.in_flight()));
            ejections.get_or_create(&labels).inc_by(s.ejections_total());
        }
        available
            .get_or_create(&[("upstream", u.name.clone())])
            .set(up);
        if let Some(b) = &u.guards.breaker {
            circuit
                .get_or_create(&[("upstream", u.name.clone())])
                .set(i64::from(b.state(now)));
        }
    }
    r.register(
        "upstream_target_healthy",
        "1 when the target takes traffic (not held down by health checks or ejected)",
        healthy,
    );
    r.register(
        "upstream_targets_available",
        "Targets of the upstream that take traffic",
        available,
    );
    r.register(
        "upstream_target_requests_in_flight",
        "Requests in flight to the target",
        in_flight,
    );
    r.register(
        "upstream_target_ejections",
        "Times passive health checks ejected the target",
        ejections,
    );
    r.register(
        "upstream_circuit_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open",
        circuit,
    );
    encode_registry(out, &r)?;
    encode_process(live, out)
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The standard `process_*` metrics, read from `/proc/self` (Linux). On
/// other systems only the start time is reported.
fn encode_process(live: &Live, out: &mut String) -> std::fmt::Result {
    let mut r = Registry::with_prefix("process");
    let start: FloatGauge = Gauge::default();
    start.set(unix_seconds(live.started));
    r.register(
        "start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        start,
    );
    if let Some(cpu) = proc_cpu_seconds() {
        let c: Counter<f64, AtomicU64> = Counter::default();
        c.inc_by(cpu);
        r.register(
            "cpu_seconds",
            "Total user and system CPU time spent in seconds",
            c,
        );
    }
    if let Some((rss, vsize)) = proc_memory() {
        let g: Gauge = Gauge::default();
        g.set(rss as i64);
        r.register("resident_memory_bytes", "Resident memory size in bytes", g);
        let g: Gauge = Gauge::default();
        g.set(vsize as i64);
        r.register("virtual_memory_bytes", "Virtual memory size in bytes", g);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let g: Gauge = Gauge::default();
        g.set(dir.count() as i64);
        r.register("open_fds", "Number of open file descriptors", g);
    }
    if let Some(max) = proc_max_fds() {
        let g: Gauge = Gauge::default();
        g.set(max as i64);
        r.register("max_fds", "Maximum number of open file descriptors", g);
    }
    encode_registry(out, &r)
}

/// The fields of `/proc/self/stat` after the command name.
fn proc_stat() -> Option<Vec<String>> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; it ends at the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User plus system CPU seconds. Clock ticks are 100 per second on Linux
/// for every architecture the gateway builds on (`USER_HZ`).
fn proc_cpu_seconds() -> Option<f64> {
    let f = proc_stat()?;
    // After the name: state is field 3 of the file, so utime (14) is index 11.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident and virtual size in bytes, from `/proc/self/status`.
fn proc_memory() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmSize:")?))
}

fn proc_max_fds() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A shared start time, read once.
pub fn process_start() -> SystemTime {
    static START: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_metrics_are_read_from_proc() {
        let mut out = String::new();
        super::encode_process(
            &super::Live {
                connections: 0,
                started: super::process_start(),
            },
            &mut out,
        )
        .expect("encodes");
        assert!(out.contains("process_start_time_seconds "), "{out}");
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_max_fds ",
            ] {
                assert!(out.contains(name), "{name} missing in {out}");
            }
        }
    }
}
