//! Spans received by a real OTLP receiver, and the exporter's failure cases.

use super::*;

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

    // A malformed traceparent starts a new trace (and is not passed on as
    // is), and the `tracestate` that came with it goes too.
    let bad = format!("00-{}-{parent}-01", trace.to_uppercase());
    let got = get_with(
        a,
        "/api",
        &[("traceparent", &bad), ("tracestate", "vendor=stale")],
    )
    .await;
    assert!(
        got.json()["headers"].get("tracestate").is_none(),
        "{}",
        got.json()["headers"]
    );
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
    // The two requests' spans went in separate exports, over one connection.
    let r = receiver.received();
    assert!(r.requests >= 2, "{} exports", r.requests);
    assert_eq!(r.connections, 1);
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
    assert_eq!(r.connections, 1, "one HTTP/2 connection for every export");
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
