//! The JSON access log, read back line by line.

use std::sync::atomic::Ordering;

use super::*;

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

#[tokio::test]
async fn a_request_abandoned_before_its_response_is_recorded_as_499() {
    // The upstream holds every request for a minute: the client gives up first.
    let slow = upstream_with(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        http::Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let extra = format!(
        "observability:\n  access_log: {{ output: '{}' }}\n",
        log.display()
    );
    let gw = start(&admin_config(&extra, slow.addr));
    let (a, admin) = (addr(&gw, "main"), gw.admin_addr().expect("admin"));
    let mut client = tokio::net::TcpStream::connect(a).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut client,
        b"GET /api HTTP/1.1\r\nhost: example.test\r\nuser-agent: impatient/1.0\r\n\r\n",
    )
    .await
    .expect("send");
    // Wait until the request is with the upstream, so it is mid-proxy when
    // the client goes away.
    for _ in 0..200 {
        if slow.requests.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.requests.load(Ordering::SeqCst), 1);
    expect_metric(admin, "portcullis_requests_in_flight", 1.0).await;
    drop(client);

    // Counted once, with a 4xx class, and no longer in flight.
    expect_metric(admin, "portcullis_requests_in_flight", 0.0).await;
    expect_metric(
        admin,
        r#"portcullis_requests_total{route="api",method="GET",status="4xx"}"#,
        1.0,
    )
    .await;
    let lines = wait_lines(&log, 1).await;
    let l = &lines[0];
    assert_eq!(l["status"], 499, "{l}");
    assert_eq!(l["error"], "client_closed_request", "{l}");
    assert_eq!(l["route"], "api");
    assert_eq!(l["upstream"], "echo");
    assert_eq!(l["user_agent"], "impatient/1.0");
    assert_eq!(l["response_bytes"], 0);
    assert_eq!(l["upstream_ms"], serde_json::Value::Null, "no answer came");
    let (total, gateway) = (
        l["duration_ms"].as_f64().expect("duration"),
        l["gateway_ms"].as_f64().expect("gateway"),
    );
    assert!(total > 0.0 && (total - gateway).abs() < 0.01, "{l}");
}
