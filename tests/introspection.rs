//! `oauth2_introspection` end to end against a local RFC 7662 server:
//! client authentication, caching of active and inactive answers, scopes,
//! consumer mapping, and a server that is slow or down (fail closed, bounded wait).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;

/// The authorization server: knows a few tokens; `slow` hangs 5 s.
async fn auth_server(calls: Arc<AtomicUsize>) -> Upstream {
    upstream_with(move |req: Request<hyper::body::Incoming>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("gateway:s%26cret")
            );
            let authorized = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v.to_str().ok() == Some(expected.as_str()));
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let form = String::from_utf8_lossy(&body).to_string();
            if !authorized {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body(Full::default())
                    .expect("response");
            }
            let token = form
                .split('&')
                .find_map(|p| p.strip_prefix("token="))
                .unwrap_or("")
                .to_string();
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
            let answer = match token.as_str() {
                "good" => json!({ "active": true, "sub": "alice", "scope": "read write", "exp": now + 600 }),
                "readonly" => json!({ "active": true, "sub": "alice", "scope": "read" }),
                "stranger" => json!({ "active": true, "sub": "nobody", "scope": "read write" }),
                "expired" => json!({ "active": true, "sub": "alice", "scope": "read write", "exp": now - 5 }),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    json!({ "active": true })
                }
                _ => json!({ "active": false }),
            };
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .expect("response")
        }
    })
    .await
}

fn config(up: SocketAddr, auth: SocketAddr) -> String {
    format!(
        r#"{listeners}upstreams:
  - name: echo
    targets: [{{ address: '{up}' }}]
consumers:
  - name: alice
    credentials: {{ subjects: [alice] }}
routes:
  - name: write
    match: {{ paths: ['/write'] }}
    upstream: echo
    plugins:
      - oauth2_introspection:
          url: 'http://{auth}/introspect'
          client_id: gateway
          client_secret: 's&cret'
          timeout: 500ms
          scopes: [write]
          require_consumer: true
  - name: both
    match: {{ paths: ['/both'] }}
    upstream: echo
    plugins:
      - jwt: {{ keys: [{{ algorithm: HS256, secret: 'a-shared-secret-of-at-least-32-bytes!!' }}] }}
      - oauth2_introspection: {{ url: 'http://{auth}/introspect', client_id: gateway, client_secret: 's&cret' }}
"#,
        listeners = listeners(2)
    )
}

async fn call(a: SocketAddr, token: &str) -> Got {
    send(
        Request::get(format!("http://{a}/write"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .expect("request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_introspected_cached_and_scoped() {
    let up = echo_upstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let auth = auth_server(calls.clone()).await;
    let gw = start(&config(up.addr, auth.addr));
    let a = addr(&gw, "main");

    let got = call(a, "good").await;
    assert_eq!(got.status, 200, "{}", got.body);
    let h = &got.json()["headers"];
    assert_eq!(h["x-consumer-name"], "alice");
    assert!(h.get("authorization").is_none());
    // Cached: no second call.
    assert_eq!(call(a, "good").await.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Inactive tokens are refused and cached too (negative caching).
    assert_eq!(call(a, "revoked").await.status, 401);
    assert_eq!(call(a, "revoked").await.status, 401);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // An `exp` in the past is inactive whatever `active` says.
    assert_eq!(call(a, "expired").await.status, 401);
    // Missing scope: 403 with the scope in the challenge.
    let got = call(a, "readonly").await;
    assert_eq!(got.status, 403);
    assert_eq!(got.code(), "insufficient_scope");
    assert!(got.headers["www-authenticate"]
        .to_str()
        .expect("text")
        .contains("scope=\"write\""));
    // Valid, but not a known consumer where one is required.
    assert_eq!(call(a, "stranger").await.status, 401);
    // Five introspections, one after another, over one kept connection.
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(auth.connections.load(Ordering::SeqCst), 1);
    // No token at all.
    let got = get(a, "/write").await;
    assert_eq!(got.status, 401);
    // Two plugins with the same challenge offer it once.
    let got = get(a, "/both").await;
    assert_eq!(got.status, 401);
    assert_eq!(got.headers.get_all("www-authenticate").iter().count(), 1);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        2,
        "only the good calls went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_down_server_fails_closed_in_bounded_time() {
    let up = echo_upstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let auth = auth_server(calls.clone()).await;
    let gw = start(&config(up.addr, auth.addr));
    let a = addr(&gw, "main");
    let t = Instant::now();
    let got = call(a, "slow").await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.code(), "auth_unavailable");
    assert_eq!(
        got.headers["www-authenticate"],
        "Bearer realm=\"portcullis\""
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "bounded by the timeout: {:?}",
        t.elapsed()
    );
    auth.kill();
    let got = call(a, "another").await;
    assert_eq!(got.status, 503);
    // Wrong client credentials at the server are a server-side failure too.
    let wrong =
        config(up.addr, auth.addr).replace("client_secret: 's&cret'", "client_secret: nope");
    let auth2 = auth_server(calls).await;
    apply(
        &gw,
        &wrong.replace(&auth.addr.to_string(), &auth2.addr.to_string()),
    )
    .expect("apply");
    assert_eq!(call(a, "good").await.status, 503);
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}
