//! The floor under `bare_proxy`: hyper's HTTP/1 server and client connections
//! and nothing else. Each client connection gets one upstream connection of
//! its own (no pool, no URI rewriting), so a request costs only what hyper
//! itself does on both sides. Used to tell the HTTP stack's cost from the
//! gateway's (see BENCHMARKS.md, "The floor: hyper alone").
//!
//!     cargo run --release --example bare_pair -- 127.0.0.1:18080 127.0.0.1:18001

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

/// The same allocator as the `portcullis` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let origin = args.next().unwrap_or_else(|| "127.0.0.1:18001".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let origin = origin.clone();
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(&origin).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let Ok((sender, conn)) = client::handshake::<_, Incoming>(TokioIo::new(up)).await
                else {
                    return;
                };
                tokio::spawn(conn);
                // HTTP/1 serves one request at a time, so the lock is never contended.
                let sender = Arc::new(Mutex::new(sender));
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let sent = sender.lock().await.send_request(req).await;
                        Ok::<_, Infallible>(match sent {
                            Ok(resp) => resp.map(http_body_util::Either::Left),
                            Err(_) => hyper::Response::builder()
                                .status(502)
                                .body(http_body_util::Either::Right(http_body_util::Empty::new()))
                                .expect("a static response is valid"),
                        })
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
