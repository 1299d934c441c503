//! Routing end to end: hosts, paths, methods, headers, query, priority,
//! specificity, listeners, 404/405, respond and redirect actions.

mod common;

use common::*;
use http::Request;
use http_body_util::Full;

const ROUTES: &str = r#"
routes:
  - name: exact-host
    match: { hosts: [api.example.com], paths: ["/"] }
    respond: { body: exact-host }
  - name: wildcard-host
    match: { hosts: ["*.example.com"] }
    respond: { body: "wildcard-host" }
  - name: health
    match: { paths: ["=/health"] }
    respond: { body: health }
  - name: users-prefix
    match: { paths: ["/users"] }
    respond: { body: users-prefix }
  - name: user-template
    match: { paths: ["/users/{id}"], methods: [GET, put] }
    respond:
      headers: { content-type: application/json, x-route: user }
      body: '{"id": "{id}"}'
  - name: files
    match: { paths: ["/files/{*rest}"] }
    respond: { body: "file={rest}" }
  - name: versioned
    match: { paths: ['~^/v(?P<ver>[0-9]+)/items$'] }
    respond: { body: "version {ver}" }
  - name: canary
    match: { paths: ["/users"], headers: [{ name: x-env, value: canary }] }
    respond: { body: canary }
  - name: beta-query
    match: { paths: ["/users"], query: [{ name: beta, regex: "^(1|true)$" }] }
    respond: { body: beta }
  - name: no-debug
    match: { paths: ["/debug"], headers: [{ name: x-debug, present: false }] }
    respond: { body: no-debug }
  - name: low
    match: { paths: ["/prio"] }
    respond: { body: low }
  - name: high
    priority: 10
    match: { paths: ["/"] }
    respond: { body: high }
  - name: first
    match: { paths: ["/tie"] }
    respond: { body: first }
  - name: second
    match: { paths: ["/tie"] }
    respond: { body: second }
  - name: old
    match: { paths: ["/old/{page}"] }
    redirect: { status: 308, location: "/new/{page}", keep_query: true }
  - name: admin-only
    listeners: [admin]
    match: { paths: ["/admin"] }
    respond: { status: 202, body: admin }
  - name: open-redirect-guard
    match: { paths: ["/go/{*rest}"] }
    redirect: { location: "/{rest}" }
  - name: json-capture
    match: { paths: ["/j/{id}"] }
    respond: { json: { id: "{id}" } }
  - name: catch-all
    match: { paths: ["/c/{*rest}"] }
    respond: { body: catch-all }
  - name: longer-prefix
    match: { paths: ["/c/deeper"] }
    respond: { body: longer-prefix }
  - name: post-only
    match: { paths: ["=/submit"], methods: [POST] }
    respond: { status: 201, json: { ok: true, n: [1, 2] } }
"#;

fn yaml() -> String {
    format!(
        "{}  - {{ name: admin, address: 127.0.0.1:0 }}\n{ROUTES}",
        listeners(1)
    )
    .replace(
        "- name: high\n    priority: 10\n    match: { paths: [\"/\"] }",
        "- name: high\n    priority: 10\n    match: { paths: [\"/prio\"] }",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_hosts_and_specificity() {
    let gw = start(&yaml());
    let a = addr(&gw, "main");
    let cases: &[(&str, &str, &str)] = &[
        ("api.example.com", "/anything", "exact-host"),
        ("API.Example.COM:8080", "/anything", "exact-host"),
        ("shop.example.com", "/x", "wildcard-host"),
        ("a.b.example.com", "/x", "wildcard-host"),
        ("example.com", "/health", "health"),
        ("x", "/users", "users-prefix"),
        ("x", "/users/", "users-prefix"),
        ("x", "/users/42/orders", "users-prefix"),
        ("x", "/files/a/b.txt", "file=a/b.txt"),
        ("x", "/files/", "file="),
        ("x", "/v2/items", "version 2"),
        ("x", "/prio", "high"),
        ("x", "/tie", "first"),
        ("x", "/users/../health", "health"),
        ("x", "/%75sers", "users-prefix"),
    ];
    for (host, path, want) in cases {
        let got = get_host(a, host, path).await;
        assert_eq!(got.body, *want, "{host}{path}");
    }
    let got = get(a, "/users/7").await;
    assert_eq!(got.body, r#"{"id": "7"}"#);
    assert_eq!(got.headers["x-route"], "user");
    assert_eq!(got.headers["content-type"], "application/json");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_query_and_method_conditions() {
    let gw = start(&yaml());
    let a = addr(&gw, "main");
    let with_header = |h: &'static str, v: &'static str, path: &'static str| {
        Request::get(format!("http://{a}{path}"))
            .header(h, v)
            .body(Full::default())
            .expect("request")
    };
    assert_eq!(
        send(with_header("x-env", "canary", "/users")).await.body,
        "canary"
    );
    assert_eq!(
        send(with_header("x-env", "prod", "/users")).await.body,
        "users-prefix"
    );
    assert_eq!(get(a, "/users?beta=true").await.body, "beta");
    assert_eq!(get(a, "/users?beta=no").await.body, "users-prefix");
    assert_eq!(get(a, "/debug").await.body, "no-debug");
    assert_eq!(
        send(with_header("x-debug", "1", "/debug")).await.status,
        404
    );
    // PUT allowed (methods are case-insensitive in config), DELETE falls to the prefix route.
    let put = Request::put(format!("http://{a}/users/1"))
        .body(Full::default())
        .expect("request");
    assert_eq!(send(put).await.body, r#"{"id": "1"}"#);
    let del = Request::delete(format!("http://{a}/users/1"))
        .body(Full::default())
        .expect("request");
    assert_eq!(send(del).await.body, "users-prefix");
    let post = Request::post(format!("http://{a}/submit"))
        .body(Full::default())
        .expect("request");
    let got = send(post).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (201, r#"{"ok":true,"n":[1,2]}"#)
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_method_not_allowed() {
    let yaml = format!(
        "{}routes:\n  - name: submit\n    match: {{ paths: ['=/submit'], methods: [POST, PUT] }}\n    respond: {{}}\n",
        listeners(1)
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let got = get(a, "/nothing").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.code(), "route_not_found");
    assert_eq!(got.headers["content-type"], "application/json");
    let e = &got.json()["error"];
    assert_eq!(e["status"], 404);
    assert_eq!(
        e["request_id"],
        got.headers["x-request-id"].to_str().expect("ascii")
    );
    let got = get(a, "/submit").await;
    assert_eq!(got.status, 405);
    assert_eq!(got.code(), "method_not_allowed");
    assert_eq!(got.headers["allow"], "POST, PUT");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_listener_restriction() {
    let gw = start(&yaml());
    let a = addr(&gw, "main");
    let got = get(a, "/old/intro?lang=en").await;
    assert_eq!(got.status, 308);
    assert_eq!(got.headers["location"], "/new/intro?lang=en");
    // Captures cannot turn a relative redirect into another site.
    for evil in ["/go//evil.com", "/go/%2F%2Fevil.com", "/go/%5Cevil.com"] {
        let got = get(a, evil).await;
        let loc = got.headers["location"].to_str().expect("ascii").to_string();
        assert!(
            loc.starts_with('/') && !loc.starts_with("//") && !loc.starts_with("/\\"),
            "{evil} -> {loc}"
        );
    }
    // Captures inside JSON bodies are escaped.
    let got = get(a, "/j/a%22b").await;
    assert_eq!(got.json()["id"], "a%22b");
    let (text, _) = raw(
        a,
        b"GET /j/a\"b HTTP/1.1\r\nhost: x\r\n\r\n",
        std::time::Duration::from_millis(500),
    )
    .await;
    if text.starts_with("HTTP/1.1 200") {
        let body = &text[text.find("\r\n\r\n").expect("head end") + 4..];
        let v: serde_json::Value = serde_json::from_str(body).expect("still valid JSON");
        assert_eq!(v["id"], "a\"b");
    }
    // A longer prefix beats a catch-all of a shorter fixed part.
    assert_eq!(get(a, "/c/deeper/x").await.body, "longer-prefix");
    assert_eq!(get(a, "/c/other").await.body, "catch-all");
    // HEAD is served by GET routes.
    let head = http::Request::head(format!("http://{a}/users/5"))
        .body(Full::default())
        .expect("request");
    let got = send(head).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, ""));
    let main_admin = get(a, "/admin").await;
    assert_eq!(
        main_admin.status, 404,
        "admin route is only on the admin listener"
    );
    let admin = get(addr(&gw, "admin"), "/admin").await;
    assert_eq!((admin.status.as_u16(), admin.body.as_str()), (202, "admin"));
    gw.shutdown().await;
}
