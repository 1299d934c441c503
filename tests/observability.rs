//! Observability end to end: `/metrics` scraped from the admin listener
//! while real requests flow (counters checked exactly), the JSON access log
//! parsed line by line, spans received by a real OTLP receiver (HTTP and
//! gRPC) with the right parents, health endpoints, the run-time log level,
//! and the failure cases (collector down or slow, log file unwritable,
//! writer behind, scrapes during reloads, bad settings).

mod common;

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

#[tokio::test]
async fn metrics_count_every_request_exactly() {
    let up = echo_upstream().await;
    let gw = start(&admin_config("", up.addr));
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin bound"));
    for _ in 0..3 {
        assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(post(a, "/api", "hello").await.status, StatusCode::OK);
    }
    assert_eq!(get(a, "/nope").await.status, StatusCode::NOT_FOUND);
    let limited: Vec<u16> = [0; 3].iter().map(|_| 0).collect();
    let mut statuses = limited;
    for s in statuses.iter_mut() {
        *s = get(a, "/limited").await.status.as_u16();
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(get(a, "/broken").await.status.as_u16(), 503);
    assert_eq!(get(a, "/quota").await.status.as_u16(), 200);
    assert_eq!(get(a, "/quota").await.status.as_u16(), 429);
    // Half the targets refuse connections: every request still succeeds, by retrying.
    for _ in 0..4 {
        assert_eq!(get(a, "/flaky").await.status, StatusCode::OK);
    }

    let p = "portcullis_requests_total";
    expect_metric(
        admin,
        &format!(r#"{p}{{route="users",method="GET",status="2xx"}}"#),
        3.0,
    )
    .await;
    expect_metric(
        admin,
        &format!(r#"{p}{{route="api",method="POST",status="2xx"}}"#),
        2.0,
    )
    .await;
    expect_metric(
        admin,
        &format!(r#"{p}{{route="",method="GET",status="4xx"}}"#),
        1.0,
    )
    .await;
    expect_metric(
        admin,
        &format!(r#"{p}{{route="limited",method="GET",status="2xx"}}"#),
        2.0,
    )
    .await;
    expect_metric(
        admin,
        &format!(r#"{p}{{route="limited",method="GET",status="4xx"}}"#),
        1.0,
    )
    .await;
    expect_metric(
        admin,
        &format!(r#"{p}{{route="broken",method="GET",status="5xx"}}"#),
        1.0,
    )
    .await;
    let text = scrape(admin).await;
    let v = |k: &str| value(&text, k);
    let rl = r#"portcullis_rate_limit_decisions_total{owner="route:limited",plugin="rate_limit",decision="#;
    assert_eq!(v(&format!(r#"{rl}"allowed"}}"#)), Some(2.0), "{text}");
    assert_eq!(v(&format!(r#"{rl}"rejected"}}"#)), Some(1.0), "{text}");
    let q = r#"portcullis_rate_limit_decisions_total{owner="route:quota",plugin="#;
    assert_eq!(
        v(&format!(r#"{q}"quota",decision="allowed"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(&format!(r#"{q}"quota",decision="rejected"}}"#)),
        Some(1.0),
        "{text}"
    );
    // The refused request never reached the concurrency limit after it.
    let allowed = format!(r#"{q}"concurrency_limit",decision="allowed"}}"#);
    assert_eq!(v(&allowed), Some(1.0), "{text}");
    let retries = v(r#"portcullis_upstream_retries_total{upstream="flaky"}"#).unwrap_or(0.0);
    assert!(
        (1.0..=4.0).contains(&retries),
        "round robin sends at least one of 4 to the dead target first: {text}"
    );
    assert_eq!(
        v(r#"portcullis_request_body_bytes_total{route="api"}"#),
        Some(10.0)
    );
    assert!(v(r#"portcullis_response_body_bytes_total{route="users"}"#).unwrap_or(0.0) > 0.0);
    assert_eq!(
        v(r#"portcullis_upstream_duration_seconds_count{upstream="echo"}"#),
        Some(2.0)
    );
    assert_eq!(
        v(r#"portcullis_request_duration_seconds_count{route="users"}"#),
        Some(3.0)
    );
    assert_eq!(
        v(&format!(
            r#"portcullis_upstream_target_healthy{{upstream="echo",target="{}"}}"#,
            up.addr
        )),
        Some(1.0)
    );
    assert_eq!(
        v(r#"portcullis_upstream_targets_available{upstream="echo"}"#),
        Some(1.0)
    );
    assert_eq!(v("portcullis_requests_in_flight"), Some(0.0));
    assert_eq!(v("portcullis_config_revision"), Some(1.0));
    assert_eq!(
        v(r#"portcullis_config_reloads_total{result="success"}"#),
        Some(1.0)
    );
    assert!(v("portcullis_connections_active").is_some());
    assert!(v("portcullis_config_loaded_timestamp_seconds").unwrap_or(0.0) > 1.7e9);
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(v(process).unwrap_or(0.0) > 0.0, "{process} in {text}");
    }
    // Label values are config names, never raw paths.
    assert!(
        !text.contains("/nope") && !text.contains("/users"),
        "{text}"
    );
    let got = get(admin, "/metrics").await;
    assert!(got.headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("application/openmetrics-text"));

    // Counters survive a reload; the reload is counted; a rejected one too.
    apply(&gw, &admin_config("", up.addr)).expect("reload");
    assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    expect_metric(
        admin,
        &format!(r#"{p}{{route="users",method="GET",status="2xx"}}"#),
        4.0,
    )
    .await;
    // A document that loads but cannot be applied (its port is taken).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = admin_config("", up.addr).replace(
        "listeners:\n",
        &format!(
            "listeners:\n  - {{ name: busy, address: {} }}\n",
            taken.local_addr().expect("addr")
        ),
    );
    assert!(apply(&gw, &busy).is_err());
    let text = scrape(admin).await;
    assert_eq!(value(&text, "portcullis_config_revision"), Some(2.0));
    assert_eq!(
        value(
            &text,
            r#"portcullis_config_reloads_total{result="success"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"portcullis_config_reloads_total{result="failure"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_by_consumer_only_when_asked() {
    let up = echo_upstream().await;
    let extra = "observability: { metrics: { consumer_label: true } }\nconsumers:\n  - { name: app-one, credentials: { api_keys: [key-one-123456] } }\nplugins:\n  - key_auth: {}\n";
    let yaml = admin_config(extra, up.addr);
    let gw = start(&yaml);
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    assert_eq!(
        get_with(a, "/users", &[("x-api-key", "key-one-123456")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(get(a, "/users").await.status, StatusCode::UNAUTHORIZED);
    expect_metric(
        admin,
        r#"portcullis_consumer_requests_total{route="users",consumer="app-one",status="2xx"}"#,
        1.0,
    )
    .await;
}

#[tokio::test]
async fn admin_listener_is_separate_and_strict() {
    let up = echo_upstream().await;
    let gw = start(&admin_config("", up.addr));
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    assert_ne!(a, admin);
    // Nothing of the admin endpoints on the public listener.
    assert_eq!(get(a, "/metrics").await.code(), "route_not_found");
    assert_eq!(get(a, "/healthz").await.code(), "route_not_found");
    assert_eq!(get(admin, "/other").await.status, StatusCode::NOT_FOUND);
    let posted = post(admin, "/metrics", "").await;
    assert_eq!(posted.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = posted.headers["allow"]
        .to_str()
        .expect("allow")
        .replace(' ', "");
    assert_eq!(allow, "GET,HEAD");
    // Metrics off: 404 on /metrics, health still served.
    let off = admin_config("observability: { metrics: { enabled: false } }\n", up.addr);
    apply(&gw, &off).expect("reload");
    assert_eq!(get(admin, "/metrics").await.code(), "metrics_disabled");
    assert_eq!(get(admin, "/healthz").await.status, StatusCode::OK);
    // No `admin` section: no admin listener at all.
    let plain = start(&format!("{}routes: []\n", listeners(1)));
    assert!(plain.admin_addr().is_none());
    // Moving the admin listener: the new address serves, the old is closed.
    let moved = admin_config("", up.addr).replace(
        "admin: { address: 127.0.0.1:0 }",
        "admin: { address: 127.0.0.2:0 }",
    );
    apply(&gw, &moved).expect("reload");
    let new_admin = gw.admin_addr().expect("admin");
    assert_eq!(new_admin.ip().to_string(), "127.0.0.2");
    assert_eq!(get(new_admin, "/healthz").await.status, StatusCode::OK);
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "old admin address still open"
    );
}

#[tokio::test]
async fn scrapes_during_reloads_always_succeed() {
    let up = echo_upstream().await;
    let one = admin_config("", up.addr);
    let two = one.replace("name: users", "name: people");
    let gw = std::sync::Arc::new(start(&one));
    let admin = gw.admin_addr().expect("admin");
    let g = gw.clone();
    let reloads = std::thread::spawn(move || {
        for i in 0..40 {
            apply(&g, if i % 2 == 0 { &two } else { &one }).expect("reload");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut scrapes = 0;
    while !reloads.is_finished() {
        let text = scrape(admin).await;
        assert!(text.contains("portcullis_config_revision"), "{text}");
        scrapes += 1;
    }
    reloads.join().expect("reloads");
    assert!(scrapes > 0);
    let text = scrape(admin).await;
    assert_eq!(value(&text, "portcullis_config_revision"), Some(41.0));
}

#[tokio::test]
async fn health_endpoints_report_liveness_and_readiness() {
    let up = echo_upstream().await;
    let gw = start(&admin_config("", up.addr));
    let admin = gw.admin_addr().expect("admin");
    let h = get(admin, "/healthz").await;
    assert_eq!(
        (h.status, h.json()["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = get(admin, "/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["revision"], 1);

    // With a healthy target required, a dead upstream makes the node not ready.
    let dead = "127.0.0.1:1";
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:0, ready_requires_healthy_upstreams: true }}\nupstreams:\n  - name: gone\n    targets: [{{ address: '{dead}' }}]\n    health_check: {{ path: /h, interval: 50ms, timeout: 30ms, healthy_threshold: 1, unhealthy_threshold: 1 }}\nroutes:\n  - {{ name: r, match: {{ paths: [/] }}, upstream: gone }}\n",
        listeners(1)
    );
    let strict = start(&yaml);
    let admin2 = strict.admin_addr().expect("admin");
    let mut last = String::new();
    for _ in 0..100 {
        let r = get(admin2, "/readyz").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                r.body.contains("upstream `gone` has no healthy target"),
                "{}",
                r.body
            );
            last.clear();
            break;
        }
        last = r.body;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.is_empty(), "never became not-ready: {last}");

    // Draining on shutdown: not ready while in-flight requests finish.
    let slow = upstream_with(|_| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        http::Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let gw = std::sync::Arc::new(start(&admin_config("", slow.addr)));
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    let inflight = tokio::spawn(async move { get(a, "/api").await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let g = gw.clone();
    let stopping = tokio::spawn(async move { g.shutdown().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = get(admin, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.body.contains("shutting down"), "{}", r.body);
    assert_eq!(inflight.await.expect("request"), StatusCode::OK);
    assert!(stopping.await.expect("shutdown"));
}

#[tokio::test]
async fn log_level_changes_at_run_time() {
    portcullis::observability::init_logging(false);
    let up = echo_upstream().await;
    let gw = start(&admin_config("", up.addr));
    let admin = gw.admin_addr().expect("admin");
    let put = |body: &'static str| {
        send(
            Request::put(format!("http://{admin}/log-level"))
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("request"),
        )
    };
    assert!(get(admin, "/log-level").await.json()["filter"].is_string());
    assert_eq!(put("debug").await.status, StatusCode::OK);
    assert_eq!(get(admin, "/log-level").await.json()["filter"], "debug");
    let json = put(r#"{"filter": "warn,portcullis::proxy=debug"}"#).await;
    assert_eq!(json.status, StatusCode::OK, "{}", json.body);
    assert_eq!(
        get(admin, "/log-level").await.json()["filter"],
        "warn,portcullis::proxy=debug"
    );
    for bad in ["portcullis=[", "", r#"{"level": "debug"}"#] {
        let got = put(bad).await;
        assert_eq!(got.status, StatusCode::BAD_REQUEST, "{bad}: {}", got.body);
        assert_eq!(got.code(), "bad_filter");
    }
    assert_eq!(
        get(admin, "/log-level").await.json()["filter"],
        "warn,portcullis::proxy=debug"
    );
    assert_eq!(put("info").await.status, StatusCode::OK);
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

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let extra = format!(
        "observability:\n  access_log: {{ output: '{}', headers: [x-tenant] }}\n",
        log.display()
    );
    let gw = start(&admin_config(&extra, up.addr));
    let a = addr(&gw, "main");
    let got = send(
        Request::post(format!("http://{a}/api?api_key=TOPSECRET&page=2"))
            .header("authorization", "Bearer TOPSECRET")
            .header("cookie", "session=TOPSECRET")
            .header("user-agent", "observability-test/1.0")
            .header("x-tenant", "acme")
            .body(Full::new(Bytes::from_static(b"12345")))
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let rid = got.headers["x-request-id"]
        .to_str()
        .expect("rid")
        .to_string();
    let lines = wait_lines(&log, 1).await;
    let l = &lines[0];
    let keys: Vec<&str> = l
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "time",
            "request_id",
            "client_ip",
            "listener",
            "protocol",
            "method",
            "host",
            "path",
            "query",
            "route",
            "upstream",
            "upstream_target",
            "status",
            "error",
            "request_bytes",
            "response_bytes",
            "duration_ms",
            "upstream_ms",
            "gateway_ms",
            "consumer",
            "user_agent",
            "tls_version",
            "trace_id",
            "span_id",
            "header.x-tenant"
        ]
    );
    assert_eq!(l["request_id"], rid.as_str());
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["listener"], "main");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], a.to_string());
    assert_eq!(l["path"], "/api");
    assert_eq!(l["query"], "api_key=REDACTED&page=2");
    assert_eq!(l["route"], "api");
    assert_eq!(l["upstream"], "echo");
    assert_eq!(l["upstream_target"], up.addr.to_string());
    assert_eq!(l["status"], 200);
    assert_eq!(l["error"], serde_json::Value::Null);
    assert_eq!(l["request_bytes"], 5);
    assert_eq!(l["response_bytes"], got.body.len());
    assert_eq!(l["user_agent"], "observability-test/1.0");
    assert_eq!(l["header.x-tenant"], "acme");
    assert_eq!(l["tls_version"], serde_json::Value::Null);
    let (total, upstream, gateway) = (
        l["duration_ms"].as_f64().expect("duration"),
        l["upstream_ms"].as_f64().expect("upstream"),
        l["gateway_ms"].as_f64().expect("gateway"),
    );
    assert!(
        total >= upstream && total >= gateway && upstream > 0.0,
        "{l}"
    );
    assert!(l["time"].as_str().expect("time").ends_with('Z'));

    assert_eq!(get(a, "/nope").await.status, StatusCode::NOT_FOUND);
    let lines = wait_lines(&log, 2).await;
    assert_eq!(lines[1]["route"], serde_json::Value::Null);
    assert_eq!(lines[1]["error"], "route_not_found");
    assert_eq!(lines[1]["upstream_ms"], serde_json::Value::Null);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains("TOPSECRET"),
        "a credential reached the log: {text}"
    );

    // Chosen fields only, in the chosen order.
    let picked = format!(
        "observability:\n  access_log: {{ output: '{}', fields: [status, route, method] }}\n",
        log.display()
    );
    apply(&gw, &admin_config(&picked, up.addr)).expect("reload");
    assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    let lines = wait_lines(&log, 3).await;
    assert_eq!(
        lines[2].to_string(),
        r#"{"status":200,"route":"users","method":"GET"}"#
    );

    // A name that needs escaping is escaped (names are checked once per
    // snapshot, and lines copy them unchecked only when all are plain).
    let odd = admin_config(&extra, up.addr)
        .replace("  - name: users\n", "  - name: 'users \"v1\" \\ \t'\n");
    apply(&gw, &odd).expect("reload");
    assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    let lines = wait_lines(&log, 4).await;
    assert_eq!(lines[3]["route"], "users \"v1\" \\ \t");
    assert_eq!(lines[3]["listener"], "main");
}

#[tokio::test]
async fn access_log_reopens_and_survives_bad_files_and_overload() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let extra = format!(
        "observability:\n  access_log: {{ output: '{}' }}\n",
        log.display()
    );
    let gw = start(&admin_config(&extra, up.addr));
    let a = addr(&gw, "main");
    assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    wait_lines(&log, 1).await;
    // logrotate moves the file, then signals; new lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    portcullis::observability::access_log::request_reopen();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    assert_eq!(wait_lines(&log, 1).await.len(), 1);
    assert_eq!(read_lines(&rotated).len(), 1);

    // A file that cannot be opened: requests are served, failures counted.
    let bad = admin_config(
        "observability:\n  access_log: { output: /nonexistent-dir/for/sure/access.log }\n",
        up.addr,
    );
    let gw = start(&bad);
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    for _ in 0..3 {
        assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    }
    expect_metric(admin, "portcullis_access_log_write_errors_total", 3.0).await;

    // A writer that cannot keep up (a FIFO nobody reads blocks it): lines are
    // dropped and counted, requests are not slowed down.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let stuck = admin_config(
        &format!(
            "observability:\n  access_log: {{ output: '{}', buffer: 2 }}\n",
            fifo.display()
        ),
        up.addr,
    );
    let gw = start(&stuck);
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    let began = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    }
    assert!(began.elapsed() < Duration::from_secs(3));
    expect_metric(admin, "portcullis_access_log_dropped_total", 8.0).await;
}

fn tracing_config(extra_tracing: &str, collector: &str, upstream: SocketAddr) -> String {
    admin_config(
        &format!(
            "observability:\n  tracing: {{ endpoint: '{collector}', export_interval: 50ms, resource: {{ deployment.environment: test }}{extra_tracing} }}\n"
        ),
        upstream,
    )
}

#[tokio::test]
async fn spans_wait_for_the_interval_unless_a_batch_fills_or_the_gateway_stops() {
    let up = echo_upstream().await;
    // Every request sampled, and the interval's tick an hour away.
    let config = |collector: SocketAddr, batch_size: usize| {
        admin_config(
            &format!("observability:\n  tracing: {{ endpoint: 'http://{collector}', sample_ratio: 1.0, export_interval: 1h, batch_size: {batch_size} }}\n"),
            up.addr,
        )
    };
    // A request's two spans (server and upstream) fill a batch of two: they
    // go at once, an hour before the interval's next tick.
    let receiver = common::otlp::start(false).await;
    let gw = start(&config(receiver.addr, 2));
    assert_eq!(get(addr(&gw, "main"), "/api").await.status, StatusCode::OK);
    assert_eq!(receiver.wait_spans(2).await.len(), 2);
    gw.shutdown().await;
    drop(gw);

    // Below a batch, spans wait for the tick (an hour away) or the end.
    let receiver = common::otlp::start(false).await;
    let gw = start(&config(receiver.addr, 100));
    assert_eq!(get(addr(&gw, "main"), "/api").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.received().spans.is_empty(),
        "exported before its tick"
    );
    gw.shutdown().await;
    drop(gw);
    assert_eq!(receiver.wait_spans(2).await.len(), 2, "flushed at the end");
}

#[tokio::test]
async fn traces_continue_the_callers_trace_over_otlp_http() {
    let receiver = common::otlp::start(false).await;
    let up = echo_upstream().await;
    let gw = start(&tracing_config(
        ", headers: { x-collector-token: s3cret }",
        &format!("http://{}", receiver.addr),
        up.addr,
    ));
    let a = addr(&gw, "main");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let got = get_with(
        a,
        "/api",
        &[
            ("traceparent", &format!("00-{trace}-{parent}-01")),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    // The upstream sees the same trace, with the gateway's client span as parent.
    let seen = got.json()["headers"]["traceparent"]
        .as_str()
        .expect("traceparent sent")
        .to_string();
    assert_eq!(got.json()["headers"]["tracestate"], "vendor=opaque");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace, "01"),
        "{seen}"
    );
    let spans = receiver.wait_spans(2).await;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    let client = spans.iter().find(|s| s.kind == 3).expect("client span");
    assert_eq!(hex(&server.trace_id), trace);
    assert_eq!(hex(&server.parent_span_id), parent);
    assert_eq!(server.trace_state, "vendor=opaque");
    assert_eq!(server.name, "GET api");
    assert_eq!(server.attr("http.route").as_deref(), Some("api"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(hex(&client.trace_id), trace);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "upstream span is the server span's child"
    );
    assert_eq!(
        hex(&client.span_id),
        parts[2],
        "the upstream's parent is the client span"
    );
    assert_eq!(client.attr("server.address"), Some(up.addr.to_string()));
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    let r = receiver.received();
    assert_eq!(r.content_types[0], "application/x-protobuf");
    assert!(
        !r.tokens.is_empty() && r.tokens.iter().all(|t| t == "s3cret"),
        "{:?}",
        r.tokens
    );
    let resource = &r.resources[0];
    assert_eq!(
        common::otlp::attr(resource, "service.name").as_deref(),
        Some("portcullis")
    );
    assert_eq!(
        common::otlp::attr(resource, "deployment.environment").as_deref(),
        Some("test")
    );

    // A malformed traceparent starts a new trace (and is not passed on as is).
    let bad = format!("00-{}-{parent}-01", trace.to_uppercase());
    let got = get_with(a, "/api", &[("traceparent", &bad)]).await;
    let sent = got.json()["headers"]["traceparent"]
        .as_str()
        .expect("sent")
        .to_string();
    assert!(
        !sent.contains(&trace.to_uppercase()) && !sent.contains(trace),
        "{sent}"
    );
    let spans = receiver.wait_spans(4).await;
    let fresh = spans
        .iter()
        .filter(|s| s.kind == 2)
        .nth(1)
        .expect("second server span");
    assert!(fresh.parent_span_id.is_empty(), "a new trace has no parent");
    assert_eq!(
        hex(&fresh.trace_id),
        sent.split('-').nth(1).expect("trace id")
    );
}

#[tokio::test]
async fn plugin_calls_out_are_child_spans() {
    let receiver = common::otlp::start(false).await;
    let up = echo_upstream().await;
    let auth = upstream_with(|_| async {
        http::Response::new(Full::new(Bytes::from_static(
            br#"{"active": true, "sub": "alice"}"#,
        )))
    })
    .await;
    let yaml = format!(
        "{}  - name: guarded\n    match: {{ paths: [/guarded] }}\n    upstream: echo\n    plugins:\n      - oauth2_introspection: {{ url: 'http://{}/introspect', client_id: gw, client_secret: s3cret }}\n",
        tracing_config("", &format!("http://{}", receiver.addr), up.addr),
        auth.addr
    );
    let gw = start(&yaml);
    let got = get_with(
        addr(&gw, "main"),
        "/guarded",
        &[("authorization", "Bearer opaque-token")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let spans = receiver.wait_spans(3).await;
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    let call = spans
        .iter()
        .find(|s| s.name == "oauth2_introspection")
        .expect("introspection span");
    assert_eq!(call.kind, 1, "internal");
    assert_eq!(call.parent_span_id, server.span_id);
    assert_eq!(call.trace_id, server.trace_id);
    assert_eq!(server.attr("enduser.id").as_deref(), Some("alice"));
    assert!(server.start_time_unix_nano <= call.start_time_unix_nano);
    assert!(call.end_time_unix_nano <= server.end_time_unix_nano);
}

#[tokio::test]
async fn grpc_export_samples_by_ratio_and_keeps_errors() {
    let receiver = common::otlp::start(true).await;
    let up = echo_upstream().await;
    let yaml = tracing_config(
        ", protocol: grpc, sample_ratio: 0.0, headers: { x-collector-token: s3cret }",
        &format!("http://{}", receiver.addr),
        up.addr,
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    for _ in 0..5 {
        assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    }
    assert_eq!(get(a, "/broken").await.status.as_u16(), 503);
    // A caller's sampled flag is followed even at ratio 0.
    let sampled = "00-11111111111111111111111111111111-2222222222222222-01";
    assert_eq!(
        get_with(a, "/users", &[("traceparent", sampled)])
            .await
            .status,
        StatusCode::OK
    );
    let spans = receiver.wait_spans(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = if receiver.received().spans.len() > spans.len() {
        receiver.received().spans
    } else {
        spans
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        spans.len(),
        2,
        "only the error and the caller-sampled request: {names:?}"
    );
    let failed = spans
        .iter()
        .find(|s| s.name == "GET broken")
        .expect("error span kept");
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "error status"
    );
    assert_eq!(failed.flags & 1, 0, "exported for the error, not sampled");
    let followed = spans
        .iter()
        .find(|s| s.name == "GET users")
        .expect("sampled span");
    assert_eq!(followed.trace_id, vec![0x11; 16]);
    let r = receiver.received();
    assert_eq!(r.content_types[0], "application/grpc");
    assert!(
        !r.tokens.is_empty() && r.tokens.iter().all(|t| t == "s3cret"),
        "gRPC metadata: {:?}",
        r.tokens
    );
}

#[tokio::test]
async fn a_down_or_slow_collector_costs_spans_not_requests() {
    let up = echo_upstream().await;
    // Down: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let gw = start(&tracing_config("", &format!("http://{dead}"), up.addr));
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    for _ in 0..5 {
        assert_eq!(get(a, "/api").await.status, StatusCode::OK);
    }
    let key = r#"portcullis_trace_spans_dropped_total{reason="export_failed"}"#;
    expect_metric(admin, key, 10.0).await;

    // Slow: accepts and never answers; the queue fills and spans are dropped.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let gw = start(&tracing_config(
        ", timeout: 5s, batch_size: 1, queue_size: 2",
        &format!("http://{hole_addr}"),
        up.addr,
    ));
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    let began = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(get(a, "/users").await.status, StatusCode::OK);
    }
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "requests were slowed down"
    );
    let text = scrape(admin).await;
    let dropped = value(
        &text,
        r#"portcullis_trace_spans_dropped_total{reason="queue_full"}"#,
    );
    assert!(dropped.unwrap_or(0.0) >= 5.0, "{text}");
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
