//! Traffic splitting: weighted canaries changed live, header and cookie
//! pinning for blue-green and beta users, sticky sides.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;

async fn named(name: &'static str) -> Upstream {
    upstream_with(move |_req| async move {
        Response::new(Full::new(Bytes::from_static(name.as_bytes())))
    })
    .await
}

fn config(stable: &Upstream, canary: &Upstream, split: &str) -> String {
    format!(
        "{}upstreams:\n  - {{ name: stable, targets: [{{ address: '{}' }}] }}\n  - {{ name: canary, targets: [{{ address: '{}' }}] }}\nroutes:\n  - name: api\n    split: {split}\n",
        listeners(1),
        stable.addr,
        canary.addr
    )
}

fn split(stable: u32, canary: u32, extra: &str) -> String {
    format!("{{ upstreams: [{{ upstream: stable, weight: {stable} }}, {{ upstream: canary, weight: {canary} }}]{extra} }}")
}

async fn tally(a: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(get(a, "/").await.body).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_apply_and_change_live() {
    let (stable, canary) = (named("stable").await, named("canary").await);
    let gw = start(&config(&stable, &canary, &split(100, 0, "")));
    let a = addr(&gw, "main");
    assert_eq!(tally(a, 50).await.get("stable"), Some(&50));
    // 5% → 50% → 100%, each applied by editing the configuration.
    apply(&gw, &config(&stable, &canary, &split(95, 5, ""))).expect("applies");
    let c = tally(a, 400).await.get("canary").copied().unwrap_or(0);
    assert!((5..=40).contains(&c), "about 5% canary: {c}/400");
    apply(&gw, &config(&stable, &canary, &split(50, 50, ""))).expect("applies");
    let c = tally(a, 400).await.get("canary").copied().unwrap_or(0);
    assert!((150..=250).contains(&c), "about half: {c}/400");
    apply(&gw, &config(&stable, &canary, &split(0, 100, ""))).expect("applies");
    assert_eq!(tally(a, 50).await.get("canary"), Some(&50));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_cookies_pin_a_side_and_sticky_remembers_it() {
    let (stable, canary) = (named("stable").await, named("canary").await);
    let yaml = config(
        &stable,
        &canary,
        &split(50, 50, ", header: x-release, cookie: release, sticky: true"),
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let with = |k: &'static str, v: &'static str| {
        Request::get(format!("http://{a}/"))
            .header(k, v)
            .body(Full::default())
            .expect("request")
    };
    for _ in 0..20 {
        assert_eq!(send(with("x-release", "canary")).await.body, "canary");
        assert_eq!(send(with("cookie", "release=stable")).await.body, "stable");
    }
    // An unknown name falls back to the weights.
    let got = send(with("x-release", "nope")).await;
    assert!(got.body == "stable" || got.body == "canary");
    // A choice by weight sets the sticky cookie; sending it back keeps the side.
    let first = get(a, "/").await;
    let cookie = first.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cookie.starts_with(&format!("release={}; Path=/; HttpOnly", first.body)),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    for _ in 0..20 {
        let req = Request::get(format!("http://{a}/"))
            .header("cookie", pair.as_str())
            .body(Full::default())
            .expect("request");
        let got = send(req).await;
        assert_eq!(got.body, first.body);
        assert!(
            got.headers.get("set-cookie").is_none(),
            "an existing choice is not set again"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_splits_are_rejected() {
    let (stable, canary) = (named("stable").await, named("canary").await);
    let gw = start(&config(&stable, &canary, &split(1, 1, "")));
    for (bad, needle) in [
        (
            "{ upstreams: [{ upstream: nowhere, weight: 1 }] }",
            "unknown upstream `nowhere`",
        ),
        (
            split(0, 0, "").as_str(),
            "every side of the split has weight 0",
        ),
        (
            split(1, 1, ", sticky: true").as_str(),
            "`sticky` needs `cookie`",
        ),
        (
            split(1, 1, ", header: 'bad header'").as_str(),
            "not a valid header name",
        ),
        ("{ upstreams: [] }", "at least one upstream"),
        (
            split(1, 1, ", cookie: 'bad name;', sticky: true").as_str(),
            "not a valid cookie name",
        ),
    ] {
        let err = apply(&gw, &config(&stable, &canary, bad))
            .expect_err(bad)
            .to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
    let both = config(&stable, &canary, &split(1, 1, "")) + "    upstream: stable\n";
    assert!(apply(&gw, &both)
        .expect_err("both")
        .to_string()
        .contains("only one of"));
    gw.shutdown().await;
}
