//! `cors` end to end: preflights answered by the gateway (before
//! authentication, routed by the announced method), headers on actual
//! responses and on gateway errors, `Vary`, and refused origins.

mod common;

use std::net::SocketAddr;

use common::*;
use http::{Method, Request};
use http_body_util::Full;

fn config(up: SocketAddr) -> String {
    format!(
        r#"{listeners}upstreams:
  - name: echo
    targets: [{{ address: '{up}' }}]
consumers:
  - name: app
    credentials: {{ api_keys: ['app-key-0123456789'] }}
routes:
  - name: api
    match: {{ paths: ['/api'], methods: [GET, PUT] }}
    upstream: echo
    plugins:
      - cors:
          origins: ['https://app.example.com', 'https://*.example.org', '~^https://[a-z]+\.dev$']
          methods: [GET, PUT]
          headers: [content-type, x-api-key]
          expose_headers: [x-request-id]
          credentials: true
          max_age: 10m
      - key_auth: {{}}
  - name: public
    match: {{ paths: ['/public'] }}
    upstream: echo
    plugins:
      - cors: {{ origins: ['*'] }}
"#,
        listeners = listeners(2)
    )
}

async fn preflight(a: SocketAddr, path: &str, origin: &str, method: &str, headers: &str) -> Got {
    send(
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{a}{path}"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .body(Full::default())
            .expect("request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_without_credentials() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr));
    let a = addr(&gw, "main");
    for origin in [
        "https://app.example.com",
        "https://x.y.example.org",
        "https://abc.dev",
    ] {
        let got = preflight(a, "/api", origin, "PUT", "Content-Type, X-Api-Key").await;
        assert_eq!(got.status, 204, "{origin}: {}", got.body);
        let h = &got.headers;
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-methods"], "GET, PUT");
        assert_eq!(h["access-control-allow-headers"], "content-type, x-api-key");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        assert!(h["vary"].to_str().expect("vary").contains("Origin"));
    }
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "preflights stay at the gateway"
    );
    // Refused: origin, method and header not allowed.
    for (path, origin, method, headers) in [
        ("/api", "https://evil.com", "PUT", "content-type"),
        ("/api", "https://example.org", "PUT", "content-type"),
        ("/api", "https://app.example.com", "GET", "x-secret"),
        ("/public", "https://app.example.com", "TRACE", ""),
    ] {
        let got = preflight(a, path, origin, method, headers).await;
        assert_eq!(got.status, 403, "{origin} {method} {headers}");
        assert_eq!(got.code(), "cors_rejected");
        assert!(got.headers.get("access-control-allow-origin").is_none());
    }
    // A method no route takes is a plain 405, preflight or not.
    let got = preflight(a, "/api", "https://app.example.com", "DELETE", "").await;
    assert_eq!(got.status, 405);
    // A wildcard route answers `*`, and echoes what was asked for.
    let got = preflight(a, "/public", "https://anyone.net", "POST", "x-custom").await;
    assert_eq!(got.status, 204);
    assert_eq!(got.headers["access-control-allow-origin"], "*");
    assert_eq!(got.headers["access-control-allow-headers"], "x-custom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_responses_carry_cors_headers_even_on_errors() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr));
    let a = addr(&gw, "main");
    let get = |origin: &'static str, key: Option<&'static str>| {
        let mut r = Request::get(format!("http://{a}/api")).header("origin", origin);
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        send(r.body(Full::default()).expect("request"))
    };
    let got = get("https://app.example.com", Some("app-key-0123456789")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(got.headers["access-control-expose-headers"], "x-request-id");
    assert_eq!(got.headers["vary"], "Origin");
    // The 401 from authentication is readable by the page too.
    let got = get("https://app.example.com", None).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    // A refused origin gets no CORS headers (the browser hides the answer).
    let got = get("https://evil.com", Some("app-key-0123456789")).await;
    assert_eq!(got.status, 200);
    assert!(got.headers.get("access-control-allow-origin").is_none());
    assert_eq!(got.headers["vary"], "Origin");
    // OPTIONS without the preflight headers is not a preflight.
    let got = send(
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{a}/public"))
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 200, "proxied to the upstream: {}", got.body);
    assert_eq!(got.json()["method"], "OPTIONS");
}
