//! The accept phase: worker event loops, listening sockets and client
//! connections.

pub mod client_cert;
pub mod connection;
pub mod listener;
pub mod tls;
pub mod workers;

pub use connection::ConnTracker;
pub use listener::BoundListener;
pub use workers::{worker_count, Workers};
