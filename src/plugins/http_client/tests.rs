//! The client against real local servers: connections kept and reused,
//! replaced when the server dropped them, not kept when the server says
//! `Connection: close`, bounded in number; HTTP/2 shared.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::connections::MAX_IDLE;
use super::{Endpoint, FetchError};

/// A server counting its connections: `/fail` answers 500, `/slow` waits
/// 100 ms, `/close` answers with `Connection: close`, anything else 200
/// with the path for a body.
async fn server(http2: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let mut resp = Response::new(Full::new(Bytes::from(path.clone())));
                    match path.as_str() {
                        "/fail" => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
                        "/slow" => tokio::time::sleep(Duration::from_millis(100)).await,
                        "/close" => {
                            resp.headers_mut()
                                .insert("connection", "close".parse().expect("value"));
                        }
                        _ => {}
                    }
                    Ok::<_, Infallible>(resp)
                });
                let io = TokioIo::new(stream);
                if http2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    (addr, connections)
}

fn endpoint(addr: SocketAddr, path: &str, http2: bool) -> Endpoint {
    let url = format!("http://{addr}{path}");
    let base = std::path::Path::new(".");
    let timeout = Duration::from_secs(5);
    match http2 {
        true => Endpoint::new_http2(&url, None, base, timeout),
        false => Endpoint::new(&url, None, base, timeout),
    }
    .expect("a valid URL")
}

async fn get(e: &Endpoint) -> Result<Bytes, FetchError> {
    e.call(Method::GET, &[], Bytes::new()).await
}

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    let (addr, connections) = server(false).await;
    let e = endpoint(addr, "/keys", false);
    for _ in 0..5 {
        assert_eq!(get(&e).await.expect("answered"), "/keys");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // A clone (each plugin instance holds one) shares the connections.
    assert_eq!(get(&e.clone()).await.expect("answered"), "/keys");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_error_status_keeps_the_connection() {
    let (addr, connections) = server(false).await;
    let failing = endpoint(addr, "/fail", false);
    match get(&failing).await {
        Err(FetchError::Status(s)) => assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR),
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(get(&failing).await.is_err());
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closes_is_not_kept() {
    let (addr, connections) = server(false).await;
    let e = endpoint(addr, "/close", false);
    for _ in 0..3 {
        assert_eq!(get(&e).await.expect("answered"), "/close");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_at_once_open_more_connections_and_keep_a_bounded_number() {
    let (addr, connections) = server(false).await;
    let e = endpoint(addr, "/slow", false);
    let n = MAX_IDLE + 4;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let e = e.clone();
        calls.spawn(async move { get(&e).await });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.expect("joined").expect("answered"), "/slow");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        n,
        "one per call at once"
    );
    assert_eq!(e.connections.idle_http1(), MAX_IDLE);
    // The next calls use kept connections.
    for _ in 0..3 {
        get(&e).await.expect("answered");
    }
    assert_eq!(connections.load(Ordering::SeqCst), n);
}

/// A server that answers the first request on each connection, then reads
/// the next one and closes without answering: a kept connection that
/// fails the moment it is reused. With `once`, it answers only on its
/// first connection (a server that has just failed).
async fn answers_once_per_connection(once: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            let answer = first || !once;
            first = false;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if !answer {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn a_kept_connection_that_fails_on_reuse_is_replaced() {
    let (addr, requests) = answers_once_per_connection(false).await;
    let e = endpoint(addr, "/introspect", false);
    for _ in 0..3 {
        assert_eq!(get(&e).await.expect("answered"), "ok");
    }
    // The second and third calls were each sent twice: on the kept
    // connection, which failed, then on a new one.
    assert_eq!(requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_server_that_is_gone_fails_the_call_after_one_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = listener.local_addr().expect("addr");
    drop(listener);
    assert!(matches!(
        get(&endpoint(gone, "/", false)).await,
        Err(FetchError::Io(_))
    ));
    // A kept connection fails, and so does the new one: the call fails
    // after two attempts, not more.
    let (addr, requests) = answers_once_per_connection(true).await;
    let e = endpoint(addr, "/", false);
    get(&e).await.expect("the first call is answered");
    assert!(matches!(get(&e).await, Err(FetchError::Io(_))));
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_calls_share_one_connection() {
    let (addr, connections) = server(true).await;
    let e = endpoint(addr, "/export", true);
    assert_eq!(get(&e).await.expect("answered"), "/export");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let e = e.clone();
        calls.spawn(async move { get(&e).await });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.expect("joined").expect("answered"), "/export");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}
