//! Listening sockets: bound once per configured address (one `SO_REUSEPORT`
//! socket per worker) and kept across reloads while the address stays in the
//! configuration.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::{serve_connection, ConnTracker};
use crate::proxy::Shared;
use crate::snapshot::ListenerKey;

/// One bound address: its sockets (one per worker) and the switch that stops them.
#[derive(Debug)]
pub struct BoundListener {
    /// The address actually bound (differs from the configured one for port 0).
    pub local: SocketAddr,
    stop: watch::Sender<bool>,
    sockets: Vec<StdListener>,
}

fn socket_for(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

impl BoundListener {
    /// Binds `addr` once per worker. Port 0 picks one free port for all of them.
    pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<BoundListener> {
        let first = socket_for(addr)?;
        let local = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(socket_for(local)?);
        }
        let (stop, _) = watch::channel(false);
        Ok(BoundListener {
            local,
            stop,
            sockets,
        })
    }

    /// Starts one accept loop per worker. `key` is how the snapshot knows this listener.
    pub fn start(
        &mut self,
        key: ListenerKey,
        handles: &[tokio::runtime::Handle],
        shared: &Arc<Shared>,
        tracker: &Arc<ConnTracker>,
    ) {
        for (socket, handle) in self.sockets.drain(..).zip(handles) {
            let ctx = AcceptCtx {
                key,
                shared: shared.clone(),
                tracker: tracker.clone(),
                stop: self.stop.subscribe(),
            };
            handle.spawn(accept_loop(socket, ctx));
        }
    }

    /// Stops accepting and asks this listener's connections to finish their
    /// in-flight requests and close.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for BoundListener {
    fn drop(&mut self) {
        self.stop();
    }
}

struct AcceptCtx {
    key: ListenerKey,
    shared: Arc<Shared>,
    tracker: Arc<ConnTracker>,
    stop: watch::Receiver<bool>,
}

async fn accept_loop(socket: StdListener, mut ctx: AcceptCtx) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listener = ?ctx.key, error = %e, "cannot register listener with the event loop");
            return;
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = ctx.stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let guard = ctx.tracker.enter();
                    tokio::spawn(serve_connection(stream, peer, ctx.key, ctx.shared.clone(), ctx.stop.clone(), guard));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(listener = ?ctx.key, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
