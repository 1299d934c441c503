//! Consumers: the named callers of the API, with their groups, metadata,
//! credentials and consumer-scoped plugins. Compiled once per snapshot into
//! lookup tables the authentication plugins use; secrets are kept only as
//! hashes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderValue;

use super::credentials::{sha256, PasswordHash};
use super::{BuildContext, BuildError, Phase, Plugin};
use crate::config::ConsumerDoc;
use crate::server::client_cert::{normalize_dn, ClientIdentity};

/// A configured caller.
#[derive(Debug)]
pub struct Consumer {
    /// Unique name (forwarded upstream and used in logs and limits).
    pub name: Arc<str>,
    /// Groups, for `acl` and per-group limits.
    pub groups: Vec<Arc<str>>,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// Plugins that apply once this consumer is known, in phase order.
    pub plugins: Vec<Arc<dyn Plugin>>,
    /// The name and the comma-joined groups as header values, made once per
    /// snapshot for the identity headers.
    pub header_values: (Option<HeaderValue>, Option<HeaderValue>),
}

/// Every consumer of a snapshot, indexed by each kind of credential.
#[derive(Debug, Default)]
pub struct Consumers {
    by_name: HashMap<String, Arc<Consumer>>,
    /// SHA-256 of each API key.
    api_keys: HashMap<[u8; 32], Arc<Consumer>>,
    /// Basic-auth username → password hash.
    basic: HashMap<String, (Arc<PasswordHash>, Arc<Consumer>)>,
    /// Token subjects (JWT claims, introspection results).
    subjects: HashMap<String, Arc<Consumer>>,
    /// Client-certificate subjects (normalized) and SANs.
    certificates: HashMap<String, Arc<Consumer>>,
    /// Client-certificate SHA-256 fingerprints, lowercase hex.
    fingerprints: HashMap<String, Arc<Consumer>>,
}

impl Consumers {
    /// The consumer named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(name)
    }

    /// The consumer holding the API key whose SHA-256 is `digest`.
    pub fn by_api_key(&self, digest: &[u8; 32]) -> Option<&Arc<Consumer>> {
        // The map compares digests, not keys: timing reveals at most a prefix
        // of a hash, which says nothing about any key. The final comparison
        // is constant-time anyway.
        let (stored, consumer) = self.api_keys.get_key_value(digest)?;
        super::credentials::constant_time_eq(stored, digest).then_some(consumer)
    }

    /// The password hash and consumer of a basic-auth username.
    pub fn by_username(&self, user: &str) -> Option<&(Arc<PasswordHash>, Arc<Consumer>)> {
        self.basic.get(user)
    }

    /// The consumer a token subject (claim value) maps to.
    pub fn by_subject(&self, subject: &str) -> Option<&Arc<Consumer>> {
        self.subjects.get(subject)
    }

    /// The consumer a verified client certificate belongs to: by its
    /// subject, then each SAN, then its fingerprint.
    pub fn by_certificate(&self, cert: &ClientIdentity) -> Option<&Arc<Consumer>> {
        std::iter::once(&cert.subject)
            .chain(&cert.sans)
            .find_map(|name| self.certificates.get(name))
            .or_else(|| self.fingerprints.get(&cert.fingerprint))
    }
}

/// Builds the consumers and their plugins; errors carry full paths.
pub fn compile(docs: &[ConsumerDoc], cx: &mut BuildContext<'_>) -> (Consumers, Vec<BuildError>) {
    let mut out = Consumers::default();
    let mut errors = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("consumers[{i}]");
        let mut plugins = Vec::new();
        for (j, p) in doc.plugins.iter().enumerate() {
            let path = format!("{at}.plugins[{j}]");
            let owner = format!("consumer:{}", doc.name);
            match super::build(p, &mut cx.owned(&path, &owner)) {
                Ok(p) if p.phase() == Phase::Authentication => errors.push((
                    format!("{path}.{}", p.name()),
                    "authentication plugins cannot be attached to a consumer (the consumer is \
                     not known before authentication); attach it to the route or globally"
                        .into(),
                )),
                Ok(p) if p.phase() == Phase::Cors => errors.push((
                    format!("{path}.{}", p.name()),
                    "`cors` cannot be attached to a consumer: a preflight carries no \
                     credentials; attach it to the route or globally"
                        .into(),
                )),
                Ok(p)
                    if plugins
                        .iter()
                        .any(|q: &Arc<dyn Plugin>| q.name() == p.name()) =>
                {
                    errors.push((
                        format!("{path}.{}", p.name()),
                        format!("`{}` is attached twice to this consumer", p.name()),
                    ))
                }
                Ok(p) => plugins.push(p),
                Err(e) => errors.extend(e),
            }
        }
        plugins.sort_by_key(|p| p.phase());
        let header_values = (
            HeaderValue::from_str(&doc.name).ok(),
            HeaderValue::from_str(&doc.groups.join(","))
                .ok()
                .filter(|_| !doc.groups.is_empty()),
        );
        let consumer = Arc::new(Consumer {
            header_values,
            name: Arc::from(doc.name.as_str()),
            groups: doc.groups.iter().map(|g| Arc::from(g.as_str())).collect(),
            metadata: doc.metadata.clone(),
            plugins,
        });
        out.by_name.insert(doc.name.clone(), consumer.clone());
        let creds = &doc.credentials;
        for (j, key) in creds.api_keys.iter().enumerate() {
            let path = format!("{at}.credentials.api_keys[{j}]");
            let digest = match key.strip_prefix("sha256:") {
                Some(hex) => match super::credentials::parse_hex32(hex) {
                    Some(d) => d,
                    None => {
                        errors.push((
                            path,
                            "a hashed key is `sha256:` and 64 hex digits (the SHA-256 of the key)"
                                .into(),
                        ));
                        continue;
                    }
                },
                None => sha256(key.as_bytes()),
            };
            if let Some(other) = out.api_keys.insert(digest, consumer.clone()) {
                errors.push((
                    path,
                    format!(
                        "this API key also belongs to consumer `{}`; keys must be unique",
                        other.name
                    ),
                ));
            }
        }
        for (j, b) in creds.basic.iter().enumerate() {
            let path = format!("{at}.credentials.basic[{j}]");
            if b.username.is_empty() || b.username.contains(':') {
                errors.push((
                    format!("{path}.username"),
                    "a Basic username is not empty and has no `:` (RFC 7617)".into(),
                ));
                continue;
            }
            match PasswordHash::parse(&b.password) {
                Ok(hash) => {
                    if out
                        .basic
                        .insert(b.username.clone(), (Arc::new(hash), consumer.clone()))
                        .is_some()
                    {
                        errors.push((
                            format!("{path}.username"),
                            format!(
                                "username `{}` is used twice; usernames must be unique",
                                b.username
                            ),
                        ));
                    }
                }
                Err(msg) => errors.push((format!("{path}.password"), msg)),
            }
        }
        for (j, s) in creds.subjects.iter().enumerate() {
            if let Some(other) = out.subjects.insert(s.clone(), consumer.clone()) {
                errors.push((
                    format!("{at}.credentials.subjects[{j}]"),
                    format!("subject `{s}` also belongs to consumer `{}`", other.name),
                ));
            }
        }
        for (j, c) in creds.certificates.iter().enumerate() {
            // SANs (`DNS:…`) keep their spelling; subjects are normalized
            // the way verified certificates report them.
            let previous = match c.strip_prefix("sha256:") {
                Some(fp) => out
                    .fingerprints
                    .insert(fp.to_ascii_lowercase().replace(':', ""), consumer.clone()),
                None if c.contains('=') && !c.contains(':') => {
                    out.certificates.insert(normalize_dn(c), consumer.clone())
                }
                None => out.certificates.insert(c.clone(), consumer.clone()),
            };
            if let Some(other) = previous {
                errors.push((
                    format!("{at}.credentials.certificates[{j}]"),
                    format!(
                        "certificate `{c}` also belongs to consumer `{}`",
                        other.name
                    ),
                ));
            }
        }
    }
    (out, errors)
}
