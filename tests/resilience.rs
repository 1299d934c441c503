//! Passive health, retries and the retry budget against real upstreams that
//! fail, refuse connections or die under load.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

async fn answering(name: &'static str, status: u16) -> Upstream {
    upstream_with(move |_req| async move {
        let mut r = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        r
    })
    .await
}

/// An upstream answering its name with 200 while `healthy`, else `failing`.
async fn toggled(
    name: &'static str,
    failing: StatusCode,
    healthy: Arc<std::sync::atomic::AtomicBool>,
) -> Upstream {
    upstream_with(move |_req| {
        let ok = healthy.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
            *r.status_mut() = if ok { StatusCode::OK } else { failing };
            r
        }
    })
    .await
}

fn dead_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn config(targets: &[std::net::SocketAddr], upstream_extra: &str) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|a| format!("{{ address: '{a}' }}"))
        .collect();
    format!(
        "{}upstreams:\n  - name: pool\n    targets: [{}]\n{upstream_extra}routes:\n  - name: r\n    upstream: pool\n",
        listeners(1),
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_ejected_after_its_failure_streak() {
    let (a, b, bad) = (
        answering("a", 200).await,
        answering("b", 200).await,
        answering("bad", 503).await,
    );
    let yaml = config(
        &[a.addr, b.addr, bad.addr],
        "    retries: { attempts: 0 }\n    passive_health: { consecutive_failures: 3, ejection: 30s, max_ejected_percent: 50 }\n",
    );
    let gw = start(&yaml);
    let mut failures = 0;
    for _ in 0..30 {
        if get(addr(&gw, "main"), "/").await.status != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "exactly the streak that ejected it");
    assert_eq!(bad.requests.load(Ordering::SeqCst), 3);
    // The ejection survives a reload that keeps the target.
    apply(&gw, &yaml.replace("ejection: 30s", "ejection: 31s")).expect("applies");
    for _ in 0..10 {
        assert_eq!(get(addr(&gw, "main"), "/").await.status, 200);
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ejection_cap_keeps_part_of_the_pool_in() {
    let (x, y) = (answering("x", 503).await, answering("y", 503).await);
    let yaml = config(&[x.addr, y.addr], "    retries: { attempts: 0 }\n    passive_health: { consecutive_failures: 2, max_ejected_percent: 50 }\n");
    let gw = start(&yaml);
    for _ in 0..20 {
        // Never a 503 "no healthy upstream": at most one of two may be out.
        let got = get(addr(&gw, "main"), "/").await;
        assert!(got.body == "x" || got.body == "y", "{}", got.body);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_target_for_any_method() {
    let good = answering("good", 200).await;
    // Default retries: two extra attempts on connect failure.
    let gw = start(&config(
        &[dead_addr(), good.addr],
        "    passive_health: { consecutive_failures: 0 }\n",
    ));
    for i in 0..20 {
        let req = if i % 2 == 0 {
            Request::get(format!("http://{}/", addr(&gw, "main"))).body(Full::default())
        } else {
            Request::post(format!("http://{}/", addr(&gw, "main")))
                .body(Full::new(Bytes::from_static(b"payload")))
        };
        let got = send(req.expect("request")).await;
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, "good"),
            "request {i}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_are_retried_only_for_replayable_requests() {
    let (bad, good) = (answering("bad", 503).await, answering("good", 200).await);
    let yaml = config(
        &[bad.addr, good.addr],
        "    retries: { attempts: 1, on: [connect_failure, 503] }\n    passive_health: { consecutive_failures: 0 }\n",
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    for _ in 0..10 {
        assert_eq!(
            get(a, "/").await.status,
            200,
            "GET is retried on the other target"
        );
    }
    let post = || {
        Request::post(format!("http://{a}/"))
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("request")
    };
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(post()).await.status.as_u16());
    }
    assert!(
        statuses.contains(&503),
        "a POST is never replayed: {statuses:?}"
    );
    // The route can allow replaying body-less non-idempotent requests.
    let allow = yaml.replace(
        "    upstream: pool\n",
        "    upstream: pool\n    retry_non_idempotent: true\n",
    );
    apply(&gw, &allow).expect("applies");
    for _ in 0..10 {
        let empty_post = Request::post(format!("http://{a}/"))
            .body(Full::default())
            .expect("request");
        assert_eq!(send(empty_post).await.status, 200);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_retry_storms() {
    let hits = Arc::new(AtomicUsize::new(0));
    let mut ups = Vec::new();
    for _ in 0..3 {
        let hits = hits.clone();
        ups.push(
            upstream_with(move |_req| {
                hits.fetch_add(1, Ordering::SeqCst);
                async {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"down")));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    r
                }
            })
            .await,
        );
    }
    let yaml = config(
        &[ups[0].addr, ups[1].addr, ups[2].addr],
        "    retries: { attempts: 2, on: [503], budget_percent: 20, backoff: 1ms, max_backoff: 2ms }\n    passive_health: { consecutive_failures: 0 }\n",
    );
    let gw = start(&yaml);
    for _ in 0..200 {
        assert_eq!(get(addr(&gw, "main"), "/").await.status, 503);
    }
    let total = hits.load(Ordering::SeqCst);
    // 200 requests; without a budget up to 600 upstream hits. With it: 200
    // plus the reserve (10) plus 20% (40).
    assert!((200..=255).contains(&total), "{total} upstream hits");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_target_under_load_loses_no_retryable_request() {
    let ups = [
        answering("a", 200).await,
        answering("b", 200).await,
        answering("c", 200).await,
    ];
    let yaml = config(
        &[ups[0].addr, ups[1].addr, ups[2].addr],
        "    load_balancing: least_requests\n    retries: { attempts: 2, on: [connect_failure, error] }\n",
    );
    let gw = Arc::new(start(&yaml));
    let a = addr(&gw, "main");
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (failed, done) = (failed.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..300 {
                let req = Request::get(format!("http://{a}/"))
                    .body(Full::default())
                    .expect("request");
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before_kill = ups[1].requests.load(Ordering::SeqCst);
    ups[1].kill();
    for c in clients {
        c.await.expect("client");
    }
    let failed = failed.load(Ordering::SeqCst);
    let after = ups[1].requests.load(Ordering::SeqCst);
    eprintln!("killed 1 of 3 targets under load after {before_kill} of its requests: {failed} of 1200 requests failed");
    assert!(before_kill > 20, "the target took load before it died");
    assert!(after - before_kill <= 1, "nothing reaches a dead target");
    assert_eq!(failed, 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_answer_503_and_release_their_permits() {
    let slow = upstream_with(|_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Response::new(Full::new(Bytes::from_static(b"slow")))
    })
    .await;
    let yaml = format!(
        "{}upstreams:\n  - name: pool\n    targets: [{{ address: '{}' }}]\n    max_in_flight: 3\nroutes:\n  - name: narrow\n    match: {{ paths: ['/narrow'] }}\n    upstream: pool\n    max_in_flight: 2\n  - name: wide\n    match: {{ paths: ['/wide'] }}\n    upstream: pool\n",
        listeners(1),
        slow.addr
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let burst = |path: &'static str, n: usize| async move {
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(async move { get(a, path).await }))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    };
    // The route allows 2 at once.
    let got = burst("/narrow", 5).await;
    let ok = got.iter().filter(|g| g.status == 200).count();
    let limited: Vec<_> = got.iter().filter(|g| g.status == 503).collect();
    assert_eq!(
        (ok, limited.len()),
        (2, 3),
        "{:?}",
        got.iter().map(|g| g.status).collect::<Vec<_>>()
    );
    assert_eq!(limited[0].code(), "concurrency_limit");
    // Permits were released: the next burst is admitted the same way.
    assert_eq!(
        burst("/narrow", 2)
            .await
            .iter()
            .filter(|g| g.status == 200)
            .count(),
        2
    );
    // The upstream allows 3 across all its routes.
    let (n, w) = tokio::join!(burst("/narrow", 2), burst("/wide", 3));
    let ok = n.iter().chain(w.iter()).filter(|g| g.status == 200).count();
    assert_eq!(ok, 3);
    // A client that gives up releases its permit too.
    let c = client();
    let req = Request::get(format!("http://{a}/narrow"))
        .body(Full::default())
        .expect("request");
    let abandoned = tokio::spawn(async move { c.request(req).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    abandoned.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        burst("/narrow", 2)
            .await
            .iter()
            .filter(|g| g.status == 200)
            .count(),
        2
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_sheds_load_and_closes_after_a_trial() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = toggled("svc", StatusCode::SERVICE_UNAVAILABLE, healthy.clone()).await;
    let yaml = config(
        &[up.addr],
        "    retries: { attempts: 0 }\n    passive_health: { consecutive_failures: 0 }\n    circuit_breaker: { failure_percent: 50, min_requests: 10, window: 10s, open_for: 300ms, half_open_requests: 1 }\n",
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    for _ in 0..10 {
        assert_eq!(get(a, "/").await.status, 503);
    }
    // Open: answered at once, the upstream sees nothing.
    let hits = up.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        let got = get(a, "/").await;
        assert_eq!(
            (got.status.as_u16(), got.code().as_str()),
            (503, "circuit_open")
        );
    }
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        hits,
        "no request reached the failing service"
    );
    // After open_for, one trial goes through; the service has recovered, so the circuit closes.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..10 {
        assert_eq!(get(a, "/").await.status, 200);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_target_gets_a_trial_and_returns() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flaky = toggled("flaky", StatusCode::BAD_GATEWAY, healthy.clone()).await;
    let steady = answering("steady", 200).await;
    let yaml = config(
        &[flaky.addr, steady.addr],
        "    retries: { attempts: 0 }\n    passive_health: { consecutive_failures: 2, ejection: 200ms, half_open_requests: 1 }\n",
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    for _ in 0..8 {
        get(a, "/").await;
    }
    let hits = flaky.requests.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(a, "/").await.body, "steady", "ejected");
    }
    assert_eq!(flaky.requests.load(Ordering::SeqCst), hits);
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut saw_flaky = false;
    for _ in 0..10 {
        saw_flaky |= get(a, "/").await.body == "flaky";
    }
    assert!(
        saw_flaky,
        "the trial passed and the target is back in rotation"
    );
    gw.shutdown().await;
}
