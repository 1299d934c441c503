//! The audit log of Admin API writes: one JSON line per write attempt
//! (who, what, when, the outcome and the configuration revision it made),
//! to the diagnostic log (target `portcullis::audit`) and, when
//! `admin.audit_log` is set, appended to that file.

use std::io::Write;

use serde_json::json;

use super::auth::Caller;

/// One audited write.
#[derive(Debug)]
pub struct Record<'a> {
    /// Who made it.
    pub caller: &'a Caller,
    /// The HTTP method.
    pub method: &'a str,
    /// The request path, like `/api/routes/users`.
    pub path: &'a str,
    /// The HTTP status of a refused write; `None` when it was applied.
    pub status: Option<u16>,
    /// The gateway's configuration revision after the write, when it applied.
    pub revision: Option<u64>,
    /// Why it was refused, when it was.
    pub error: Option<&'a str>,
}

/// Writes `rec` to the diagnostic log and to `file` when set. A file that
/// cannot be written is reported in the diagnostic log; the write itself
/// has already happened and is not undone.
pub fn write(rec: &Record<'_>, file: Option<&std::path::Path>) {
    let time = jiff::Timestamp::now().to_string();
    let line = json!({
        "time": time,
        "who": rec.caller.name,
        "via": rec.caller.via,
        "role": rec.caller.role.as_str(),
        "method": rec.method,
        "path": rec.path,
        "outcome": if rec.status.is_none() { "applied" } else { "refused" },
        "status": rec.status,
        "revision": rec.revision,
        "error": rec.error,
    });
    tracing::info!(target: "portcullis::audit", "{line}");
    if let Some(path) = file {
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = result {
            tracing::error!(file = %path.display(), error = %e, "cannot write the admin audit log");
        }
    }
}
