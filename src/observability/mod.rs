//! Diagnostics: the gateway's own log (`tracing`), human-readable or JSON.
//! Metrics, access logs and traces arrive with the observability work.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global log subscriber. `PORTCULLIS_LOG` (or `RUST_LOG`)
/// sets levels, like `info` or `portcullis=debug`; `json` switches to one JSON
/// object per line. Safe to call more than once (later calls do nothing).
pub fn init_logging(json: bool) {
    let filter = std::env::var("PORTCULLIS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
