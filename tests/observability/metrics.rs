//! Metrics scraped from the admin listener, health endpoints and the run-time
//! log level.

use super::*;

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
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(a, "/limited").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(get(a, "/broken").await.status.as_u16(), 503);
    assert_eq!(get(a, "/quota").await.status.as_u16(), 200);
    assert_eq!(get(a, "/quota").await.status.as_u16(), 429);
    // Half the targets refuse connections: every request still succeeds, by retrying.
    for _ in 0..4 {
        assert_eq!(get(a, "/flaky").await.status, StatusCode::OK);
    }

    for (route, method, class, want) in [
        ("users", "GET", "2xx", 3.0),
        ("api", "POST", "2xx", 2.0),
        ("", "GET", "4xx", 1.0),
        ("limited", "GET", "2xx", 2.0),
        ("limited", "GET", "4xx", 1.0),
        ("broken", "GET", "5xx", 1.0),
    ] {
        let key = format!(
            r#"portcullis_requests_total{{route="{route}",method="{method}",status="{class}"}}"#
        );
        expect_metric(admin, &key, want).await;
    }
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
        r#"portcullis_requests_total{route="users",method="GET",status="2xx"}"#,
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
