//! Configuration: the YAML document users write, loaded and validated as a
//! whole. Every problem is collected and reported with its path, line and
//! column; a document with any error is never compiled into a snapshot.

pub mod control;
pub mod document;
pub mod error;
pub mod model;
pub mod observability;
pub mod store;
pub mod units;
pub mod validate;
pub mod yaml;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::{ConfigError, ConfigErrors, Pos};
pub use model::*;
pub use observability::{AccessLogDoc, AdminDoc, ObservabilityDoc, OtlpProtocol, TracingDoc};
pub use yaml::Positions;

/// A parsed and validated document with the source positions of its values.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The document.
    pub doc: Document,
    /// The document as written (before `${NAME}` substitution), as JSON.
    pub raw: Value,
    /// Source positions, for errors found later (for example when binding).
    pub positions: Positions,
    /// The file path or `<inline>`.
    pub source_name: String,
}

/// Reads, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError::at(
            "",
            None,
            format!("cannot read the configuration file: {e}"),
        )],
    })?;
    load_str(&src, &name, &|k| std::env::var(k).ok())
}

/// Parses and validates a document from text; `env` resolves `${NAME}`.
pub fn load_str(
    src: &str,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        source_name: source_name.to_string(),
        errors,
    };
    let mut root = yaml::parse(src).map_err(fail)?;
    let mut errors = Vec::new();
    // The document as written, `${NAME}` references kept: what the Admin API
    // shows and writes back, so secrets from the environment never reach the store.
    let raw = yaml::to_json(&root, "", &mut Positions::default(), &mut Vec::new());
    yaml::substitute_env(&mut root, "", env, &mut errors);
    let mut positions = Positions::default();
    let value = yaml::to_json(&root, "", &mut positions, &mut errors);
    let doc = deserialize_document(value, &positions, &mut errors);
    if errors.is_empty() {
        errors.extend(validate::validate(&doc, &positions));
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.pos.map_or((usize::MAX, 0), |p| (p.line, p.col)));
        return Err(fail(errors));
    }
    Ok(LoadedConfig {
        doc,
        raw,
        positions,
        source_name: source_name.to_string(),
    })
}

/// Deserializes section by section and item by item, so that a wrong type
/// in one route does not hide the errors of the next.
pub(crate) fn deserialize_document(
    value: Value,
    positions: &Positions,
    errors: &mut Vec<ConfigError>,
) -> Document {
    let mut doc = Document::default();
    let obj = match value {
        Value::Object(o) => o,
        Value::Null => return doc,
        _ => {
            errors.push(ConfigError::at(
                "",
                positions.find(""),
                "the document must be a mapping with `listeners`, `upstreams`, `routes`, `consumers` and `plugins`",
            ));
            return doc;
        }
    };
    for (key, v) in obj {
        match key.as_str() {
            "gateway" => {
                if let Some(g) = item(v, "gateway", positions, errors) {
                    doc.gateway = g;
                }
            }
            "listeners" => doc.listeners = list(v, "listeners", positions, errors),
            "certificates" => doc.certificates = list(v, "certificates", positions, errors),
            "upstreams" => doc.upstreams = list(v, "upstreams", positions, errors),
            "routes" => doc.routes = list(v, "routes", positions, errors),
            "consumers" => doc.consumers = list(v, "consumers", positions, errors),
            "plugins" => doc.plugins = list(v, "plugins", positions, errors),
            "admin" => doc.admin = item(v, "admin", positions, errors),
            "cluster" => doc.cluster = item(v, "cluster", positions, errors),
            "observability" => {
                if let Some(o) = item(v, "observability", positions, errors) {
                    doc.observability = o;
                }
            }
            other => errors.push(ConfigError::at(
                other,
                positions.find(other),
                format!(
                    "unknown section `{other}`; expected one of `gateway`, `listeners`, `certificates`, `upstreams`, `routes`, `consumers`, `plugins`, `admin`, `observability`, `cluster`"
                ),
            )),
        }
    }
    doc
}

fn list<T: DeserializeOwned>(
    v: Value,
    path: &str,
    positions: &Positions,
    errors: &mut Vec<ConfigError>,
) -> Vec<T> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, it)| item(it, &format!("{path}[{i}]"), positions, errors))
            .collect(),
        _ => {
            errors.push(ConfigError::at(
                path,
                positions.find(path),
                format!("`{path}` must be a list (each item starting with `- `)"),
            ));
            Vec::new()
        }
    }
}

fn item<T: DeserializeOwned>(
    v: Value,
    path: &str,
    positions: &Positions,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let full = match inner.as_str() {
                "." => path.to_string(),
                p if p.starts_with('[') => format!("{path}{p}"),
                p => format!("{path}.{p}"),
            };
            let message = e.into_inner().to_string();
            errors.push(ConfigError::at(&full, positions.find(&full), message));
            None
        }
    }
}

#[cfg(test)]
mod tests;
