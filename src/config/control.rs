//! The control-plane settings users write: who may use the Admin API
//! (`admin.tokens`, `admin.clients`, `admin.tls`), where writes are audited,
//! and the `cluster` section that makes etcd the configuration store.
//! Checked here; compiled by `admin::auth` and `config::store`.

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};

/// What an Admin API caller may do.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Read the configuration and the runtime state.
    ReadOnly,
    /// Also create, change and delete resources.
    ReadWrite,
}

impl AdminRole {
    /// The name used in the configuration and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::ReadOnly => "read_only",
            AdminRole::ReadWrite => "read_write",
        }
    }
}

/// A bearer token for the Admin API. The token itself is read from the
/// environment or a file when the configuration loads and only its SHA-256
/// digest is kept; or the digest is written here directly.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenDoc {
    /// Who holds the token, as written in the audit log.
    pub name: String,
    /// What the holder may do.
    pub role: AdminRole,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: Option<String>,
    /// Environment variable holding the token.
    pub env: Option<String>,
    /// File holding the token (surrounding whitespace ignored).
    pub file: Option<String>,
}

/// A client certificate identity allowed on an mTLS admin listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminClientDoc {
    /// The certificate subject, like `CN=ops,O=Example`.
    pub subject: String,
    /// What the holder may do.
    pub role: AdminRole,
}

/// Cluster mode: the shared configuration (certificates, upstreams, routes,
/// consumers, global plugins) lives in etcd; this node's file keeps its own
/// `gateway`, `listeners`, `admin`, `observability` and `cluster` sections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterDoc {
    /// The etcd cluster.
    pub etcd: EtcdDoc,
    /// A copy of the last document applied from etcd, used when etcd is
    /// unreachable at start (relative to the config file's folder). Default:
    /// the config file's name with `.cluster-cache.json` appended.
    pub cache: Option<String>,
    /// Base64 of a 32-byte key (AES-256-GCM) that encrypts secrets in the
    /// store: certificate keys, API keys, passwords and plugin secrets. Give
    /// every node the same key, usually as `${PORTCULLIS_STORE_KEY}`.
    pub encryption_key: Option<String>,
}

/// Where etcd is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdDoc {
    /// Client URLs, like `http://127.0.0.1:2379`; tried in order.
    pub endpoints: Vec<String>,
    /// Key prefix; the document is stored at `<prefix>/config`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Time allowed for one etcd call.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// TLS to `https://` endpoints: the CA to trust (default: the system's
    /// roots), a client certificate for etcd's `--client-cert-auth`, the
    /// name to verify. The fields of an upstream's `tls`.
    pub tls: Option<super::UpstreamTlsDoc>,
    /// The etcd user, when etcd has authentication on (with `password`).
    pub username: Option<String>,
    /// Its password; use `${ENV}`.
    pub password: Option<String>,
}

fn default_prefix() -> String {
    "/portcullis".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}

/// The largest Admin API request body by default.
pub fn default_admin_body() -> ByteSize {
    ByteSize(1024 * 1024)
}

/// Checks the admin access settings; `err` gets the path and the problem.
pub fn check_admin_access(
    tokens: &[AdminTokenDoc],
    clients: &[AdminClientDoc],
    err: &mut dyn FnMut(&str, String),
) {
    let mut names = std::collections::HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let at = format!("admin.tokens[{i}]");
        if t.name.trim().is_empty() {
            err(&format!("{at}.name"), "name must not be empty".into());
        } else if !names.insert(t.name.as_str()) {
            err(
                &format!("{at}.name"),
                format!("duplicate token name `{}`", t.name),
            );
        }
        let sources = [t.sha256.is_some(), t.env.is_some(), t.file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            err(
                &at,
                "give exactly one of `sha256` (hex digest), `env` (variable name) or `file` (path)"
                    .into(),
            );
        }
        if let Some(h) = &t.sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                err(
                    &format!("{at}.sha256"),
                    "expected 64 hex digits, like the output of `printf %s \"$TOKEN\" | sha256sum`"
                        .into(),
                );
            }
        }
    }
    for (i, c) in clients.iter().enumerate() {
        if !c.subject.contains('=') {
            err(
                &format!("admin.clients[{i}].subject"),
                format!(
                    "`{}` is not a distinguished name; write it like `CN=ops,O=Example`",
                    c.subject
                ),
            );
        }
    }
}

/// Checks the cluster settings.
pub fn check_cluster(c: &ClusterDoc, err: &mut dyn FnMut(&str, String)) {
    if c.etcd.endpoints.is_empty() {
        err(
            "cluster.etcd.endpoints",
            "list at least one etcd client URL, like `http://127.0.0.1:2379`".into(),
        );
    }
    for (i, e) in c.etcd.endpoints.iter().enumerate() {
        if !e.starts_with("http://") && !e.starts_with("https://") {
            err(
                &format!("cluster.etcd.endpoints[{i}]"),
                format!("`{e}` is not an etcd client URL; write it like `http://127.0.0.1:2379` (or `https://` for TLS)"),
            );
        }
    }
    match (&c.etcd.username, &c.etcd.password) {
        (Some(u), Some(_)) if u.is_empty() => err(
            "cluster.etcd.username",
            "the user name is empty; give the etcd user, or remove `username` and `password`"
                .into(),
        ),
        (Some(_), None) | (None, Some(_)) => err(
            "cluster.etcd",
            "give both `username` and `password` (etcd's user authentication), or neither".into(),
        ),
        _ => {}
    }
    let https = c.etcd.endpoints.iter().any(|e| e.starts_with("https://"));
    if c.etcd.tls.is_some() && !https {
        err(
            "cluster.etcd.tls",
            "TLS settings are used only with `https://` endpoints; write the endpoints as `https://host:2379`, or remove `tls`".into(),
        );
    }
    if !c.etcd.prefix.starts_with('/') || c.etcd.prefix.ends_with('/') {
        err(
            "cluster.etcd.prefix",
            "the prefix starts with `/` and does not end with one, like `/portcullis`".into(),
        );
    }
    if let Some(k) = &c.encryption_key {
        if crate::config::store::secrets::parse_key(k).is_err() {
            err(
                "cluster.encryption_key",
                "expected the base64 of 32 random bytes, like the output of `head -c32 /dev/urandom | base64`".into(),
            );
        }
    }
}
