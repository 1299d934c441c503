//! The proxy pipeline: what happens to each request between the listener and
//! the upstream. See `pipeline` for the phase order.

pub mod actions;
pub mod arrival;
pub mod body;
pub mod errors;
pub mod forward;
pub mod grpc_web;
pub mod headers;
pub mod pipeline;
pub mod request_id;
pub mod template;
pub mod upgrade;

pub use errors::GatewayError;
pub use pipeline::{handle, ConnInfo, Shared};
