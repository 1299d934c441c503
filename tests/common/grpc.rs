//! A gRPC-style service for tests: HTTP/2 (h2c), length-prefixed message
//! frames and `grpc-status` trailers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::IterStream;

/// A gRPC message frame: uncompressed flag, 4-byte length, payload.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// An HTTP/2 (h2c) server acting as a gRPC service: it answers with as many
/// message frames as the request's `x-count` says (a server stream) and ends
/// with `grpc-status: 0` trailers. It checks that `te: trailers` arrived,
/// that the content type is gRPC (not gRPC-Web) and that the request is one
/// whole message frame (`grpc-status: 13` and a `grpc-message` saying what
/// was wrong otherwise), and waits `x-delay-ms` before answering.
pub async fn grpc_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let te_ok = req.headers().get("te").is_some_and(|v| v == "trailers");
                    let ct_ok = req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v == "application/grpc" || v == "application/grpc+proto");
                    let count: usize = req
                        .headers()
                        .get("x-count")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(1);
                    let delay: u64 = req
                        .headers()
                        .get("x-delay-ms")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(0);
                    let request = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..count)
                        .map(|i| {
                            Ok(Frame::data(grpc_frame(
                                format!("reply {i} to {} bytes", request.len()).as_bytes(),
                            )))
                        })
                        .collect();
                    let mut trailers = HeaderMap::new();
                    let framed = request.len() >= 5
                        && u32::from_be_bytes([request[1], request[2], request[3], request[4]])
                            as usize
                            == request.len() - 5;
                    let problem = [
                        (te_ok, "no te: trailers"),
                        (ct_ok, "not a gRPC content type"),
                        (framed, "not one message frame"),
                    ]
                    .into_iter()
                    .find(|(ok, _)| !ok);
                    let (status, message) = match problem {
                        None => ("0", "done"),
                        Some((_, why)) => ("13", why),
                    };
                    trailers.insert("grpc-status", status.parse().expect("value"));
                    trailers.insert("grpc-message", message.parse().expect("value"));
                    frames.push(Ok(Frame::trailers(trailers)));
                    let body = StreamBody::new(IterStream(frames.into_iter()));
                    let mut resp = Response::new(body);
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().expect("value"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}
