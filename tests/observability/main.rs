//! Observability end to end: `/metrics` scraped from the admin listener
//! while real requests flow (counters checked exactly), the JSON access log
//! parsed line by line, spans received by a real OTLP receiver (HTTP and
//! gRPC) with the right parents, health endpoints, the run-time log level,
//! and the failure cases (collector down or slow, log file unwritable,
//! writer behind, scrapes during reloads, bad settings).

mod access_log;
#[path = "../common/mod.rs"]
mod common;
mod metrics;
mod tracing;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

fn admin_config(extra: &str, upstream: SocketAddr) -> String {
    format!(
        "{}admin: {{ address: 127.0.0.1:0 }}\n{extra}upstreams:\n  - name: echo\n    targets: [{{ address: {upstream} }}]\n  - name: flaky\n    targets: [{{ address: '127.0.0.1:1' }}, {{ address: {upstream} }}]\n    load_balancing: round_robin\nroutes:\n  - name: flaky\n    match: {{ paths: [/flaky] }}\n    upstream: flaky\n  - name: quota\n    match: {{ paths: [/quota] }}\n    respond: {{ status: 200, body: ok }}\n    plugins:\n      - quota: {{ limit: 1, period: day, store: local, key: ip }}\n      - concurrency_limit: {{ max: 5, key: ip }}\n  - name: users\n    match: {{ paths: [/users] }}\n    respond: {{ json: {{ users: [] }} }}\n  - name: api\n    match: {{ paths: [/api] }}\n    upstream: echo\n  - name: limited\n    match: {{ paths: [/limited] }}\n    respond: {{ status: 200, body: ok }}\n    plugins:\n      - rate_limit: {{ limit: 2, window: 1m, key: ip }}\n  - name: broken\n    match: {{ paths: [/broken] }}\n    respond: {{ status: 503, body: down }}\n",
        listeners(2)
    )
}

async fn scrape(admin: SocketAddr) -> String {
    let got = get(admin, "/metrics").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert!(got.body.ends_with("# EOF\n"), "{}", got.body);
    got.body
}

/// The value of the series `key` (name and labels exactly as exposed).
fn value(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Waits until series `key` equals `want` (responses are recorded when their
/// body is finished, a moment after the client has read it).
async fn expect_metric(admin: SocketAddr, key: &str, want: f64) {
    let mut last = None;
    for _ in 0..100 {
        let text = scrape(admin).await;
        last = value(&text, key);
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scrape(admin).await;
    panic!("{key}: want {want}, got {last:?}\n{text}");
}

async fn post(addr: SocketAddr, path: &str, body: &'static str) -> Got {
    send(
        Request::post(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request"),
    )
    .await
}

fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let lines = read_lines(path);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {n} lines in {}: {:?}",
        path.display(),
        read_lines(path)
    );
}

#[test]
fn bad_observability_settings_are_refused_with_their_paths() {
    let base = format!("{}routes: []\n", listeners(1));
    for (section, path, msg) in [
        ("admin: { address: localhost }", "admin.address", "not an IP:PORT"),
        ("admin: { address: 127.0.0.1:9, extra: 1 }", "admin", "unknown field"),
        ("observability: { metrics: { latency_buckets: [] } }", "observability.metrics.latency_buckets", "at least one"),
        ("observability: { metrics: { latency_buckets: [0.5, 0.1] } }", "observability.metrics.latency_buckets", "ascending"),
        ("observability: { metrics: { latency_buckets: [-1] } }", "observability.metrics.latency_buckets", "positive"),
        ("observability: { access_log: { fields: [status, password] } }", "observability.access_log.fields[1]", "unknown field `password`"),
        ("observability: { access_log: { fields: [] } }", "observability.access_log.fields", "at least one"),
        ("observability: { access_log: { headers: [Authorization] } }", "observability.access_log.headers[0]", "never logged"),
        ("observability: { access_log: { headers: [Cookie] } }", "observability.access_log.headers[0]", "never logged"),
        ("observability: { access_log: { headers: ['bad header'] } }", "observability.access_log.headers[0]", "not a valid header name"),
        ("observability: { access_log: { buffer: 0 } }", "observability.access_log.buffer", "between 1"),
        ("observability: { access_log: { output: '' } }", "observability.access_log.output", "stdout"),
        ("observability: { tracing: { endpoint: 'localhost:4318' } }", "observability.tracing.endpoint", "http:// or https://"),
        ("observability: { tracing: { endpoint: 'ftp://x:1' } }", "observability.tracing.endpoint", "http:// or https://"),
        ("observability: { tracing: { endpoint: 'http://x:1', sample_ratio: 1.5 } }", "observability.tracing.sample_ratio", "between 0 and 1"),
        ("observability: { tracing: { endpoint: 'http://x:1', sample_ratio: -0.1 } }", "observability.tracing.sample_ratio", "between 0 and 1"),
        ("observability: { tracing: { endpoint: 'http://x:1', protocol: thrift } }", "observability.tracing.protocol", "unknown variant"),
        ("observability: { tracing: { endpoint: 'http://x:1', ca: ca.pem } }", "observability.tracing.ca", "https://"),
        ("observability: { tracing: { endpoint: 'http://x:1', queue_size: 10, batch_size: 100 } }", "observability.tracing.queue_size", "at least `batch_size`"),
        ("observability: { tracing: { endpoint: 'http://x:1', timeout: 0s } }", "observability.tracing.timeout", "more than 0s"),
        ("observability: { tracing: { endpoint: 'http://x:1', headers: { 'bad name': x } } }", "observability.tracing.headers.bad name", "not a valid header name"),
        ("observability: { tracing: { endpoint: 'http://x:1', service_name: '' } }", "observability.tracing.service_name", "must not be empty"),
        ("observability: { tracing: { endpoint: 'http://x:1', sampling: 1 } }", "observability.tracing", "unknown field"),
    ] {
        let yaml = format!("{base}{section}\n");
        let err = portcullis::config::load_str(&yaml, "<test>", &|_| None)
            .err()
            .unwrap_or_else(|| panic!("accepted: {section}"));
        let found = err.errors.iter().any(|e| e.path.starts_with(path) && e.message.contains(msg));
        assert!(found, "{section}: want `{path}`: {msg}; got {err}");
    }
    // The admin listener cannot share a public listener's address.
    let clash = "gateway: { workers: 1 }\nlisteners:\n  - { name: main, address: 127.0.0.1:18080 }\nadmin: { address: 127.0.0.1:18080 }\nroutes: []\n";
    let err = portcullis::config::load_str(clash, "<test>", &|_| None).expect_err("refused");
    assert!(err.to_string().contains("its own port"), "{err}");
}
