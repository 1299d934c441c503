//! Portcullis: an API gateway. One binary between clients and backend
//! services that routes every request and applies cross-cutting policy at
//! the edge.
//!
//! Where things live: `config` (the document users write), `snapshot` (its
//! compiled runtime form), `routing`, `proxy` (the per-request pipeline),
//! `upstream` (targets and connection pools), `server` (workers, listeners,
//! connections), `gateway` (applying configurations), `reload` (file watch
//! and signals), `plugins`, `observability` (metrics, access
//! log, traces), `admin` (the admin listener), `cli`, `clock` (time for
//! window arithmetic, manual in tests).

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod gateway;
pub mod observability;
pub mod plugins;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod upstream;

pub use gateway::{ApplyError, ConfigSource, Gateway, StartOptions};

/// The bundled quickstart configuration, used by `portcullis run` without `--config`.
pub const QUICKSTART: &str = include_str!("../examples/quickstart.yaml");
