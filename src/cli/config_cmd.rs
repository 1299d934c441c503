//! `portcullis config export | diff FILE | apply FILE`: a Git repository of
//! YAML as the source of truth for a running node (as decK does for Kong).
//! `diff` and `apply` compare resource by resource (by name); `apply` sends
//! the whole document with `If-Match`, so a change made meanwhile by
//! someone else is not overwritten.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use http::{header, Method, StatusCode};
use serde_json::Value;

use super::remote::{self, Answer};
use crate::config::document::{to_yaml, KINDS};
use crate::config::store::cluster::LOCAL_SECTIONS;

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the live configuration as YAML.
    Export {
        /// `yaml` (default) or `json`.
        #[arg(long, default_value = "yaml")]
        format: String,
    },
    /// Show what `apply FILE` would change.
    Diff {
        /// The desired configuration (YAML).
        file: PathBuf,
    },
    /// Make the live configuration equal to FILE.
    Apply {
        /// The desired configuration (YAML).
        file: PathBuf,
    },
}

/// Runs a `config` subcommand against the admin listener at `admin`.
pub fn run(action: ConfigAction, admin: &str, token: Option<String>) -> ExitCode {
    let token = token.or_else(|| std::env::var("PORTCULLIS_ADMIN_TOKEN").ok());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match action {
            ConfigAction::Export { format } => export(admin, token.as_deref(), &format).await,
            ConfigAction::Diff { file } => diff(admin, token.as_deref(), &file, false).await,
            ConfigAction::Apply { file } => diff(admin, token.as_deref(), &file, true).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis config: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(a: Answer) -> Result<Answer, String> {
    match a.status {
        s if s.is_success() => Ok(a),
        StatusCode::UNAUTHORIZED => Err(format!(
            "the admin listener refused the credentials ({}); pass --token or set PORTCULLIS_ADMIN_TOKEN",
            a.message()
        )),
        s => Err(format!("{s}: {}", a.message())),
    }
}

async fn live(admin: &str, token: Option<&str>) -> Result<(Value, Option<String>), String> {
    let a = check(remote::call(admin, token, Method::GET, "/api/config", &[], None).await?)?;
    let doc =
        serde_json::from_slice(&a.body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    Ok((doc, a.etag))
}

async fn export(admin: &str, token: Option<&str>, format: &str) -> Result<(), String> {
    let (doc, _) = live(admin, token).await?;
    match format {
        "yaml" => print!("{}", to_yaml(&doc)),
        "json" => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        other => return Err(format!("--format {other}: use yaml or json")),
    }
    Ok(())
}

/// Reads a YAML file as the raw document (`${NAME}` kept; the node
/// validates it, with its own environment).
fn read_file(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let root = crate::config::yaml::parse(&text).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut errors = Vec::new();
    let raw = crate::config::yaml::to_json(&root, "", &mut Default::default(), &mut errors);
    if let Some(e) = errors.first() {
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(raw)
}

/// Lines describing how `to` differs from `from`, and the number of changes.
fn changes(from: &Value, to: &Value) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for k in KINDS {
        // Node-local sections left out of the file are kept as they are.
        if LOCAL_SECTIONS.contains(&k.section) && to.get(k.section).is_none() {
            continue;
        }
        let old = k.items(from);
        let new = k.items(to);
        for item in new {
            let id = k.id_of(item).unwrap_or_default();
            match k.get(from, &id) {
                None => {
                    out.push(format!("+ {}/{id}", k.section));
                    n += 1;
                }
                Some((_, before)) if before != item => {
                    out.push(format!("~ {}/{id}", k.section));
                    if let (Value::Object(b), Value::Object(a)) = (before, item) {
                        for (f, v) in a {
                            if b.get(f) != Some(v) {
                                out.push(format!(
                                    "    {f}: {} -> {v}",
                                    b.get(f).map_or("(none)".into(), Value::to_string)
                                ));
                            }
                        }
                        for f in b.keys().filter(|f| !a.contains_key(*f)) {
                            out.push(format!("    {f}: removed"));
                        }
                    }
                    n += 1;
                }
                Some(_) => {}
            }
        }
        for item in old {
            let id = k.id_of(item).unwrap_or_default();
            if k.get(to, &id).is_none() {
                out.push(format!("- {}/{id}", k.section));
                n += 1;
            }
        }
    }
    for section in ["gateway", "admin", "observability", "cluster"] {
        let (a, b) = (from.get(section), to.get(section));
        // Node-local sections left out of the file are kept as they are.
        if b.is_none() && LOCAL_SECTIONS.contains(&section) {
            continue;
        }
        if a != b {
            out.push(format!("~ {section}"));
            n += 1;
        }
    }
    (out, n)
}

async fn diff(admin: &str, token: Option<&str>, file: &Path, apply: bool) -> Result<(), String> {
    let desired = read_file(file)?;
    if !desired.is_object() {
        return Err(format!(
            "`{}` must be a mapping of sections",
            file.display()
        ));
    }
    let (current, tag) = live(admin, token).await?;
    let (lines, n) = changes(&current, &desired);
    for l in &lines {
        println!("{l}");
    }
    if n == 0 {
        println!("no differences");
        return Ok(());
    }
    println!("{n} change(s)");
    if !apply {
        return Ok(());
    }
    let body = serde_json::to_vec(&desired).map_err(|e| e.to_string())?;
    let headers: Vec<(header::HeaderName, String)> =
        tag.into_iter().map(|t| (header::IF_MATCH, t)).collect();
    let a = remote::call(
        admin,
        token,
        Method::PUT,
        "/api/config",
        &headers,
        Some(body),
    )
    .await?;
    if a.status == StatusCode::PRECONDITION_FAILED {
        return Err(
            "the live configuration changed while this ran; run `config diff` again".into(),
        );
    }
    let a = check(a)?;
    let rev = serde_json::from_slice::<Value>(&a.body)
        .ok()
        .and_then(|v| v.get("revision").and_then(Value::as_u64))
        .unwrap_or(0);
    println!("applied: configuration revision {rev}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_are_listed_by_resource() {
        let from =
            json!({"routes": [{"name": "a", "x": 1}, {"name": "b"}], "listeners": [{"name": "l"}]});
        let to =
            json!({"routes": [{"name": "a", "x": 2}, {"name": "c"}], "listeners": [{"name": "l"}]});
        let (lines, n) = changes(&from, &to);
        assert_eq!(n, 3, "{lines:?}");
        assert!(lines.contains(&"~ routes/a".to_string()));
        assert!(lines.contains(&"    x: 1 -> 2".to_string()));
        assert!(lines.contains(&"+ routes/c".to_string()));
        assert!(lines.contains(&"- routes/b".to_string()));
        assert_eq!(changes(&from, &from).1, 0);
    }
}
