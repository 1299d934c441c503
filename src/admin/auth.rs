//! Who may use the Admin API: bearer tokens (kept only as SHA-256 digests)
//! and, on a TLS admin listener with client verification, certificate
//! subjects; each maps to a role. Compiled once per snapshot; checked on
//! every `/api` request.

use std::path::Path;
use std::sync::Arc;

use http::request::Parts;
use http::HeaderMap;

use crate::config::control::AdminRole;
use crate::config::AdminDoc;
use crate::server::client_cert::{normalize_dn, ClientIdentity};

/// A token holder: name, role and the token's SHA-256 digest.
#[derive(Debug, Clone)]
struct Token {
    name: String,
    role: AdminRole,
    digest: [u8; 32],
}

/// The compiled admin access settings of a snapshot.
#[derive(Debug, Default)]
pub struct AdminAccess {
    tokens: Vec<Token>,
    clients: Vec<(String, AdminRole)>,
    /// TLS for the admin listener, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where write audit lines go besides the diagnostic log.
    pub audit_log: Option<std::path::PathBuf>,
    /// Largest request body accepted.
    pub max_body: usize,
}

/// An authenticated Admin API caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token name or certificate subject.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// `token` or `certificate`.
    pub via: &'static str,
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials were sent.
    Missing,
    /// Credentials were sent and match nobody.
    Wrong,
    /// No credentials are configured at all.
    NoneConfigured,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Builds the access settings; errors name the field and say what to fix.
pub fn compile(doc: &AdminDoc, base: &Path) -> Result<AdminAccess, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut tokens = Vec::new();
    for (i, t) in doc.tokens.iter().enumerate() {
        let at = format!("admin.tokens[{i}]");
        let secret = if let Some(h) = &t.sha256 {
            match hex32(&h.to_ascii_lowercase()) {
                Some(d) => Some(d),
                None => {
                    errors.push((format!("{at}.sha256"), "expected 64 hex digits".into()));
                    None
                }
            }
        } else if let Some(var) = &t.env {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(sha256(v.trim().as_bytes())),
                _ => {
                    errors.push((
                        format!("{at}.env"),
                        format!("the environment variable `{var}` is not set or empty; export the token in it"),
                    ));
                    None
                }
            }
        } else if let Some(file) = &t.file {
            let path = base.join(file);
            match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim().is_empty() => Some(sha256(v.trim().as_bytes())),
                Ok(_) => {
                    errors.push((
                        format!("{at}.file"),
                        format!("`{}` is empty", path.display()),
                    ));
                    None
                }
                Err(e) => {
                    errors.push((
                        format!("{at}.file"),
                        format!("cannot read `{}`: {e}", path.display()),
                    ));
                    None
                }
            }
        } else {
            None
        };
        if let Some(digest) = secret {
            tokens.push(Token {
                name: t.name.clone(),
                role: t.role,
                digest,
            });
        }
    }
    let tls = match &doc.tls {
        None => None,
        Some(t) => match crate::server::tls::build(t, base, false, &[]) {
            Ok(s) => Some(s.config),
            Err((field, msg)) => {
                errors.push((format!("admin.tls.{field}"), msg));
                None
            }
        },
    };
    if !doc.clients.is_empty() && doc.tls.as_ref().is_none_or(|t| t.client_auth.is_none()) {
        errors.push((
            "admin.clients".into(),
            "client certificates need `admin.tls` with `client_auth` (the CA that issues them)"
                .into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AdminAccess {
        tokens,
        clients: doc
            .clients
            .iter()
            .map(|c| (normalize_dn(&c.subject), c.role))
            .collect(),
        tls,
        audit_log: doc.audit_log.as_ref().map(|p| base.join(p)),
        max_body: doc.max_body_size.0 as usize,
    })
}

impl AdminAccess {
    /// Whether any credential is configured.
    pub fn configured(&self) -> bool {
        !self.tokens.is_empty() || !self.clients.is_empty()
    }

    /// Finds who is calling: a verified client certificate listed in
    /// `clients`, else a bearer token.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&ClientIdentity>,
    ) -> Result<Caller, Denied> {
        if !self.configured() {
            return Err(Denied::NoneConfigured);
        }
        if let Some(id) = peer {
            if let Some((subject, role)) = self.clients.iter().find(|(s, _)| *s == id.subject) {
                return Ok(Caller {
                    name: subject.clone(),
                    role: *role,
                    via: "certificate",
                });
            }
        }
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(if peer.is_some() {
                Denied::Wrong
            } else {
                Denied::Missing
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(Denied::Wrong)?;
        let digest = sha256(token.as_bytes());
        // Every entry is compared, in constant time, so timing says nothing
        // about which (or whether any) token is close.
        let mut found = None;
        for t in &self.tokens {
            let same = ring_eq(&t.digest, &digest);
            if same && found.is_none() {
                found = Some(t);
            }
        }
        found
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
                via: "token",
            })
            .ok_or(Denied::Wrong)
    }
}

fn ring_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The verified client certificate of the connection a request came on
/// (put in the request's extensions by the admin listener).
pub fn peer(parts: &Parts) -> Option<&ClientIdentity> {
    parts
        .extensions
        .get::<Arc<ClientIdentity>>()
        .map(|a| a.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::control::{AdminClientDoc, AdminTokenDoc};

    fn doc(tokens: Vec<AdminTokenDoc>) -> AdminDoc {
        serde_json::from_value::<AdminDoc>(serde_json::json!({"address": "127.0.0.1:0"}))
            .map(|mut d| {
                d.tokens = tokens;
                d
            })
            .expect("admin doc")
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("header"),
        );
        h
    }

    #[test]
    fn tokens_map_to_roles_and_are_kept_hashed() {
        let digest: String = sha256(b"reader-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::env::set_var("PORTCULLIS_TEST_ADMIN_TOKEN", "writer-token");
        let access = compile(
            &doc(vec![
                AdminTokenDoc {
                    name: "reader".into(),
                    role: AdminRole::ReadOnly,
                    sha256: Some(digest),
                    env: None,
                    file: None,
                },
                AdminTokenDoc {
                    name: "writer".into(),
                    role: AdminRole::ReadWrite,
                    sha256: None,
                    env: Some("PORTCULLIS_TEST_ADMIN_TOKEN".into()),
                    file: None,
                },
            ]),
            Path::new("."),
        )
        .expect("compiles");
        assert!(!format!("{access:?}").contains("writer-token"));
        let r = access
            .authenticate(&bearer("reader-token"), None)
            .expect("reader");
        assert_eq!((r.name.as_str(), r.role), ("reader", AdminRole::ReadOnly));
        let w = access
            .authenticate(&bearer("writer-token"), None)
            .expect("writer");
        assert_eq!(w.role, AdminRole::ReadWrite);
        assert_eq!(
            access.authenticate(&bearer("nope"), None),
            Err(Denied::Wrong)
        );
        assert_eq!(
            access.authenticate(&HeaderMap::new(), None),
            Err(Denied::Missing)
        );
        let none = compile(&doc(vec![]), Path::new(".")).expect("compiles");
        assert_eq!(
            none.authenticate(&bearer("x"), None),
            Err(Denied::NoneConfigured)
        );
    }

    #[test]
    fn bad_token_sources_are_reported() {
        let e = compile(
            &doc(vec![AdminTokenDoc {
                name: "x".into(),
                role: AdminRole::ReadOnly,
                sha256: None,
                env: Some("PORTCULLIS_NOT_SET_ANYWHERE".into()),
                file: None,
            }]),
            Path::new("."),
        )
        .expect_err("unset env");
        assert_eq!(e[0].0, "admin.tokens[0].env");
        let mut d = doc(vec![]);
        d.clients = vec![AdminClientDoc {
            subject: "CN=ops".into(),
            role: AdminRole::ReadWrite,
        }];
        let e = compile(&d, Path::new(".")).expect_err("clients without TLS");
        assert_eq!(e[0].0, "admin.clients");
    }
}
