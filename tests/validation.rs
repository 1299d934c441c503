//! `request_validation` and `request_size_limit` end to end: schema errors
//! listed, query and header rules, the body still reaching the upstream
//! intact after validation, and limits on what gets buffered.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;

fn config(up: SocketAddr) -> String {
    format!(
        r#"{listeners}upstreams:
  - name: echo
    targets: [{{ address: '{up}' }}]
routes:
  - name: orders
    match: {{ paths: ['/orders'] }}
    upstream: echo
    max_body_size: 1kb
    plugins:
      - request_validation:
          body_schema:
            type: object
            required: [item, quantity]
            additionalProperties: false
            properties:
              item: {{ type: string, minLength: 1 }}
              quantity: {{ type: integer, minimum: 1 }}
          query:
            page: {{ pattern: '^[0-9]+$' }}
            view: {{ values: [full, short] }}
          headers:
            x-tenant: {{ required: true, pattern: '^[a-z]+$' }}
  - name: small
    match: {{ paths: ['/small'] }}
    upstream: echo
    plugins:
      - request_size_limit: {{ max: 16B }}
"#,
        listeners = listeners(2)
    )
}

fn post(a: SocketAddr, path: &str, body: &str, tenant: Option<&str>) -> Request<Full<Bytes>> {
    let mut r =
        Request::post(format!("http://{a}{path}")).header("content-type", "application/json");
    if let Some(t) = tenant {
        r = r.header("x-tenant", t);
    }
    r.body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_query_and_headers_are_validated() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr));
    let a = addr(&gw, "main");
    let good = r#"{"item":"book","quantity":2}"#;
    let got = send(post(a, "/orders?page=2&view=full", good, Some("acme"))).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.json()["body"],
        good,
        "the validated body reaches the upstream"
    );

    let got = send(post(
        a,
        "/orders",
        r#"{"item":"","quantity":0,"x":1}"#,
        Some("acme"),
    ))
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(got.code(), "validation_failed");
    let details = got.json()["error"]["details"].clone();
    let text = details.to_string();
    assert!(details.as_array().is_some_and(|d| d.len() >= 3), "{text}");
    assert!(
        text.contains("/item") && text.contains("/quantity"),
        "{text}"
    );

    let got = send(post(a, "/orders?page=x&view=all", good, None)).await;
    assert_eq!(got.status, 400);
    let text = got.json()["error"]["details"].to_string();
    for needle in ["`page`", "`view`", "`x-tenant` is required"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let got = send(
        Request::get(format!("http://{a}/orders"))
            .header("x-tenant", "acme")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 200, "a body-less GET has no body to check");
    let got = send(post(a, "/orders", "", Some("acme"))).await;
    assert_eq!(got.status, 400);
    assert!(got.body.contains("body is required"), "{}", got.body);
    let got = send(post(a, "/orders", "{not json", Some("acme"))).await;
    assert_eq!(got.status, 400);
    assert!(got.body.contains("not valid JSON"));
    let got = send(
        Request::post(format!("http://{a}/orders"))
            .header("x-tenant", "acme")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(good)))
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 415);
    // Larger than the route's limit: refused before buffering it all.
    let big = format!(r#"{{"item":"{}","quantity":1}}"#, "x".repeat(2000));
    let got = send(post(a, "/orders", &big, Some("acme"))).await;
    assert_eq!(got.status, 413);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        2,
        "only the valid requests went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_buffered_within_the_limit() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr));
    let a = addr(&gw, "main");
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{\"item\":\"pen\","))),
        Ok(Frame::data(Bytes::from_static(b"\"quantity\":3}"))),
    ];
    let req = Request::post(format!("http://{a}/orders"))
        .header("content-type", "application/json")
        .header("x-tenant", "acme")
        .body(StreamBody::new(IterStream(chunks.into_iter())))
        .expect("request");
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);

    // request_size_limit: a declared length over the limit, and a streamed one.
    let got = send(post(a, "/small", "this is more than sixteen bytes", None)).await;
    assert_eq!(got.status, 413);
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..4)
        .map(|_| Ok(Frame::data(Bytes::from_static(b"0123456789"))))
        .collect();
    let req = Request::post(format!("http://{a}/small"))
        .body(StreamBody::new(IterStream(chunks.into_iter())))
        .expect("request");
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await;
    assert!(
        resp.map_or(true, |r| r.status() == 413),
        "streamed body over the limit"
    );
    assert_eq!(send(post(a, "/small", "tiny", None)).await.status, 200);
}
