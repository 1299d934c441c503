//! A bare hyper reverse proxy, used by `bench/run.sh` as a reference point:
//! what hyper plus hyper-util's pooled client cost with no gateway logic at
//! all (no routing, no header rules, no timeouts, no limits). The gap between
//! it and Portcullis is the gateway's own overhead; the gap between it and
//! nginx is the HTTP stack's.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:18080 127.0.0.1:18001

use std::convert::Infallible;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The same allocator as the `portcullis` binary, so the comparison is of
/// the gateway's logic and not of two allocators.
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
        let client: Client<_, hyper::body::Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (client, origin) = (client.clone(), origin.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let (client, origin) = (client.clone(), origin.clone());
                    async move {
                        let pq = req
                            .uri()
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_string();
                        *req.uri_mut() = format!("http://{origin}{pq}").parse().expect("valid uri");
                        match client.request(req).await {
                            Ok(resp) => Ok::<_, Infallible>(resp.map(http_body_util::Either::Left)),
                            Err(_) => Ok(hyper::Response::builder()
                                .status(502)
                                .body(http_body_util::Either::Right(http_body_util::Empty::new()))
                                .expect("valid response")),
                        }
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
