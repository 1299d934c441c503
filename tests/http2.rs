//! HTTP/2 from clients: h2c with prior knowledge on plain listeners, h2 over
//! TLS by ALPN, many streams on one connection, and HTTP/2 turned off.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

async fn h2c(a: SocketAddr) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(a).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

async fn body_of(mut sender: SendRequest<Full<Bytes>>, uri: String) -> (u16, Version, String) {
    let resp = sender
        .send_request(Request::get(uri).body(Full::default()).expect("request"))
        .await
        .expect("response");
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

fn config(up: SocketAddr, listener_extra: &str) -> String {
    format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:0{listener_extra} }}\nupstreams:\n  - {{ name: echo, targets: [{{ address: '{up}' }}] }}\nroutes:\n  - {{ name: r, upstream: echo }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_multiplex_over_one_connection() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr, ""));
    let a = addr(&gw, "main");
    let sender = h2c(a).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = sender.clone();
            tokio::spawn(body_of(s, format!("http://api.example.com/item/{i}")))
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, version, body) = t.await.expect("task");
        assert_eq!((status, version), (200, Version::HTTP_2));
        let echo: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(echo["uri"], format!("/item/{i}"));
        assert_eq!(
            echo["headers"]["x-forwarded-host"], "api.example.com",
            "the :authority is the host"
        );
    }
    // Plain HTTP/1.1 still works on the same listener.
    assert_eq!(get(a, "/x").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr, ", http2: false"));
    let a = addr(&gw, "main");
    let tcp = TcpStream::connect(a).await.expect("connect");
    let refused = match hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    {
        Err(_) => true,
        Ok((mut sender, conn)) => {
            tokio::spawn(conn);
            sender
                .send_request(
                    Request::get(format!("http://{a}/"))
                        .body(Full::default())
                        .expect("request"),
                )
                .await
                .is_err()
        }
    };
    assert!(refused, "h2c is refused when http2 is off");
    assert_eq!(get(a, "/x").await.status, 200);
    gw.shutdown().await;
}
