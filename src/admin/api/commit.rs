//! The write path of the Admin API. A write is a change to the whole raw
//! document; it is checked exactly as a file would be (parse, validate,
//! compile), then:
//!
//! * with a config file: applied, then saved back to the file atomically
//!   (rolled back when saving fails);
//! * without one (the embedded quickstart): applied, kept in memory;
//! * in cluster mode: stored in etcd with a compare-and-swap on the key's
//!   revision, then applied here; every other node applies it from its
//!   watch. A concurrent write by another node makes the change run again
//!   on the new document (its `If-Match` checks then see the new state).
//!
//! Writes on one node happen one at a time; every attempt is audited.

use http::StatusCode;
use serde_json::Value;

use super::{ApiError, FieldError};
use crate::admin::audit;
use crate::admin::auth::Caller;
use crate::admin::AdminState;
use crate::config::store::cluster::{Cluster, StoreError, LOCAL_SECTIONS};
use crate::config::{document, ConfigErrors};
use crate::gateway::{ApplyError, ConfigSource};

/// A change to the raw document; returns the section and index of the
/// item it wrote, when one, so errors inside it get their field path.
pub type Change<'a> =
    dyn Fn(&mut Value) -> Result<Option<(&'static str, usize)>, ApiError> + Send + Sync + 'a;

/// What a successful write made.
#[derive(Debug)]
pub struct Committed {
    /// The new raw document.
    pub doc: Value,
    /// The gateway's configuration revision serving it.
    pub revision: u64,
}

/// Applies `change` to the current document and commits the result.
pub async fn commit(
    state: &AdminState,
    caller: &Caller,
    method: &str,
    path: &str,
    change: &Change<'_>,
) -> Result<Committed, ApiError> {
    let _one_at_a_time = state.writes.lock().await;
    let result = run(state, change).await;
    let access = state.shared.snapshot.load().settings.admin_access.clone();
    let (status, revision, error) = match &result {
        Ok(c) => (None, Some(c.revision), None),
        Err(e) => (Some(e.status.as_u16()), None, Some(e.message.as_str())),
    };
    audit::write(
        &audit::Record {
            caller,
            method,
            path,
            status,
            revision,
            error,
        },
        access.audit_log.as_deref(),
    );
    result
}

async fn run(state: &AdminState, change: &Change<'_>) -> Result<Committed, ApiError> {
    let gw = state.gateway.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is shutting down",
        )
    })?;
    let current = gw.snapshot().raw.clone();
    match gw.source() {
        ConfigSource::Cluster { node, cluster } => {
            for _ in 0..5 {
                let base = cluster.merge(&current);
                let mut doc = base.clone();
                let target = change(&mut doc)?;
                for section in LOCAL_SECTIONS {
                    if doc.get(section) != base.get(section) {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "node_local",
                            format!("`{section}` is node-local in cluster mode: change it in this node's file (`{}`), not through the API", node.display()),
                        ));
                    }
                }
                check(&doc, &node.display().to_string(), target)?;
                let (_, expected) = cluster.shared();
                match cluster.write(&Cluster::shared_part(&doc), expected).await {
                    Ok(_) => {
                        let revision = gw.reload().map_err(|e| applied_error(e, target))?;
                        return Ok(Committed { doc, revision });
                    }
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "store_unavailable",
                            format!("the change was not stored: {e}"),
                        ))
                    }
                }
            }
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                "other nodes kept changing the configuration; retry",
            ))
        }
        ConfigSource::File(path) => {
            let mut doc = (*current).clone();
            let target = change(&mut doc)?;
            let loaded = parse(&doc, &path.display().to_string(), target)?;
            let revision = gw.apply(loaded).map_err(|e| applied_error(e, target))?;
            let text = crate::config::store::file::render(&doc);
            gw.note_persisted(text.as_bytes());
            if let Err(e) = crate::config::store::file::write_atomic(&path, text.as_bytes()) {
                tracing::error!(file = %path.display(), error = %e, "cannot save the configuration; rolling back");
                if let Ok(old) =
                    document::load_value((*current).clone(), &path.display().to_string(), &env)
                {
                    let _ = gw.apply(old);
                }
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "not_saved",
                    format!(
                        "cannot save `{}` ({e}); the change was rolled back",
                        path.display()
                    ),
                ));
            }
            Ok(Committed { doc, revision })
        }
        ConfigSource::Inline(_) | ConfigSource::Json(_) => {
            let mut doc = (*current).clone();
            let target = change(&mut doc)?;
            let loaded = parse(&doc, "<admin api>", target)?;
            let revision = gw
                .apply_from(ConfigSource::Json(doc.clone()), loaded)
                .map_err(|e| applied_error(e, target))?;
            Ok(Committed { doc, revision })
        }
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Parses and validates `doc`; applying it compiles it.
fn parse(
    doc: &Value,
    source: &str,
    target: Option<(&'static str, usize)>,
) -> Result<crate::config::LoadedConfig, ApiError> {
    document::load_value(doc.clone(), source, &env).map_err(|e| invalid(e, target))
}

/// Validates and compiles `doc` without applying it: in cluster mode a
/// document must be known good before it is stored for every node.
fn check(doc: &Value, source: &str, target: Option<(&'static str, usize)>) -> Result<(), ApiError> {
    let loaded = parse(doc, source, target)?;
    let pools = crate::upstream::UpstreamRegistry::default();
    let inert = crate::plugins::StateStore::inert();
    crate::snapshot::compile(&loaded, 0, 1, &pools, &inert).map_err(|errors| {
        invalid(
            ConfigErrors {
                source_name: source.to_string(),
                errors,
            },
            target,
        )
    })?;
    Ok(())
}

/// 400 with every problem, each with its document path and, inside the
/// written resource, its field path.
pub fn invalid(e: ConfigErrors, target: Option<(&'static str, usize)>) -> ApiError {
    let prefix = target.map(|(s, i)| format!("{s}[{i}]"));
    let errors: Vec<FieldError> = e
        .errors
        .iter()
        .map(|err| FieldError {
            path: err.path.clone(),
            field: prefix.as_ref().and_then(|p| {
                let rest = err.path.strip_prefix(p.as_str())?;
                if rest.is_empty() {
                    Some(String::new())
                } else {
                    rest.strip_prefix('.')
                        .map(str::to_string)
                        .or_else(|| rest.starts_with('[').then(|| rest.to_string()))
                }
            }),
            message: err.message.clone(),
        })
        .collect();
    let first = errors
        .first()
        .map(|f| {
            format!(
                "{}: {}",
                if f.path.is_empty() {
                    "<document>"
                } else {
                    &f.path
                },
                f.message
            )
        })
        .unwrap_or_default();
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_config",
        message: format!(
            "the resulting configuration is invalid ({} problem(s)); first: {first}",
            errors.len()
        ),
        errors,
        details: None,
    }
}

fn applied_error(e: ApplyError, target: Option<(&'static str, usize)>) -> ApiError {
    match e {
        ApplyError::Config(c) => invalid(c, target),
        ApplyError::Bind { .. } => {
            ApiError::new(StatusCode::CONFLICT, "cannot_bind", e.to_string())
        }
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_applied",
            other.to_string(),
        ),
    }
}
