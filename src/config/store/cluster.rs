//! Cluster mode: the shared part of the configuration (certificates,
//! upstreams, routes, consumers, global plugins) is one JSON document in
//! etcd at `<prefix>/config`. Every node keeps the last one it applied (and
//! a copy on disk), watches the key, and applies each new version; writes
//! go through a compare-and-swap on the key's modification revision, so
//! two writers can never overwrite each other unseen.
//!
//! A node that loses etcd keeps serving what it has and resynchronises when
//! etcd answers again; a node that starts while etcd is down starts from
//! its disk copy when it has one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::etcd_client::{CasOutcome, Credentials, EtcdClient, EtcdError, Stored, WatchEvent};
use super::secrets::{self, SecretError, SecretKey};
use crate::config::control::ClusterDoc;

/// The stored document format this version writes and reads.
pub const FORMAT: u64 = 1;

/// Sections every node keeps in its own file; the rest is shared.
pub const LOCAL_SECTIONS: [&str; 5] = ["gateway", "listeners", "admin", "observability", "cluster"];

/// Why the cluster store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer or refused a call.
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    /// etcd is down at start and there is no copy on disk.
    #[error("etcd is unreachable ({reason}) and there is no cached copy at `{cache}`; start etcd or fix `cluster.etcd.endpoints`")]
    NoStartingPoint {
        /// What the client said.
        reason: String,
        /// Where the copy would be.
        cache: String,
    },
    /// The stored document was written by a newer Portcullis.
    #[error("etcd holds a configuration in format {format} (written by {written_by}); this node understands format {FORMAT}: upgrade it before it joins")]
    NewerFormat {
        /// The stored format number.
        format: u64,
        /// The writer's version string.
        written_by: String,
    },
    /// The stored value is not a document this gateway wrote.
    #[error("the value at `{key}` is not a Portcullis document: {reason}")]
    Corrupt {
        /// The etcd key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret could not be decrypted.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// Another writer changed the document first.
    #[error("the configuration changed in etcd meanwhile (now at revision {0}); read it again and retry")]
    Conflict(i64),
}

#[derive(Debug, Default)]
struct State {
    /// The shared document, secrets decrypted.
    shared: Value,
    /// The etcd modification revision of `shared` (0: not from etcd yet).
    revision: i64,
}

/// A node's view of the cluster store.
#[derive(Debug)]
pub struct Cluster {
    client: EtcdClient,
    key: Vec<u8>,
    cache: PathBuf,
    secret: Option<SecretKey>,
    endpoints: String,
    state: Mutex<State>,
}

impl Cluster {
    /// Prepares the store from the node's `cluster` section; `config_path`
    /// is the node's file (the cache goes next to it by default).
    pub fn new(doc: &ClusterDoc, config_path: &Path) -> Result<Cluster, String> {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        // `https://` endpoints without a `tls` section verify etcd against
        // the system's roots.
        let tls = match &doc.etcd.tls {
            Some(t) => Some(t.clone()),
            None if doc.etcd.endpoints.iter().any(|e| e.starts_with("https://")) => {
                Some(crate::config::UpstreamTlsDoc::default())
            }
            None => None,
        }
        .map(|t| crate::upstream::tls::build("etcd", &t, dir, true))
        .transpose()
        .map_err(|(field, msg)| match field.is_empty() {
            true => format!("cluster.etcd.tls: {msg}"),
            false => format!("cluster.etcd.tls.{field}: {msg}"),
        })?;
        let credentials = match (&doc.etcd.username, &doc.etcd.password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let client = EtcdClient::new(&doc.etcd.endpoints, doc.etcd.timeout.0, tls, credentials)
            .map_err(|e| format!("cluster.etcd.endpoints: {e}"))?;
        let cache = match &doc.cache {
            Some(c) => dir.join(c),
            None => {
                let mut name = config_path.as_os_str().to_owned();
                name.push(".cluster-cache.json");
                PathBuf::from(name)
            }
        };
        let secret = match &doc.encryption_key {
            Some(k) => {
                Some(secrets::parse_key(k).map_err(|e| format!("cluster.encryption_key: {e}"))?)
            }
            None => None,
        };
        Ok(Cluster {
            client,
            key: format!("{}/config", doc.etcd.prefix).into_bytes(),
            cache,
            secret,
            endpoints: doc.etcd.endpoints.join(", "),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared document this node has, and its etcd revision.
    pub fn shared(&self) -> (Value, i64) {
        let s = self.state();
        (s.shared.clone(), s.revision)
    }

    /// The etcd endpoints, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The full document for this node: its own file's local sections and
    /// the shared sections from the store.
    pub fn merge(&self, node: &Value) -> Value {
        let shared = self.state().shared.clone();
        let mut out = Map::new();
        if let Value::Object(n) = node {
            for (k, v) in n {
                if LOCAL_SECTIONS.contains(&k.as_str()) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        if let Value::Object(s) = shared {
            for (k, v) in s {
                if !LOCAL_SECTIONS.contains(&k.as_str()) {
                    out.insert(k, v);
                }
            }
        }
        Value::Object(out)
    }

    /// The shared sections of a full document.
    pub fn shared_part(doc: &Value) -> Value {
        let mut out = Map::new();
        if let Value::Object(d) = doc {
            for (k, v) in d {
                if !LOCAL_SECTIONS.contains(&k.as_str()) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(out)
    }

    /// Loads the starting point: etcd's document; when etcd has none yet,
    /// `seed` (the first node's file) is stored; when etcd is unreachable,
    /// the disk copy. Fails with a message saying what to do otherwise.
    pub async fn bootstrap(&self, seed: Value) -> Result<&'static str, StoreError> {
        match self.client.get(&self.key).await {
            Ok(Some(stored)) => {
                self.accept(stored)?;
                Ok("etcd")
            }
            Ok(None) => match self.write(&seed, 0).await {
                Ok(_) => Ok("seeded etcd from this node's file"),
                Err(StoreError::Conflict(_)) => Ok("etcd"),
                Err(e) => Err(e),
            },
            Err(e) => {
                let bytes =
                    std::fs::read(&self.cache).map_err(|_| StoreError::NoStartingPoint {
                        reason: e.to_string(),
                        cache: self.cache.display().to_string(),
                    })?;
                let revision = self.decode(&bytes).map(|(_, r)| r)?;
                self.accept(Stored {
                    value: bytes,
                    mod_revision: revision,
                })?;
                tracing::warn!(error = %e, cache = %self.cache.display(), "etcd is unreachable; starting from the cached copy");
                Ok("the cached copy (etcd unreachable)")
            }
        }
    }

    /// Decodes a stored envelope: the shared document (secrets open) and
    /// the revision recorded in it (used for the disk copy).
    fn decode(&self, bytes: &[u8]) -> Result<(Value, i64), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: String::from_utf8_lossy(&self.key).into_owned(),
            reason,
        };
        let env: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let format = env
            .get("format")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt("no `format` number".into()))?;
        if format > FORMAT {
            return Err(StoreError::NewerFormat {
                format,
                written_by: env
                    .get("written_by")
                    .and_then(Value::as_str)
                    .unwrap_or("an unknown version")
                    .to_string(),
            });
        }
        let mut doc = env
            .get("document")
            .cloned()
            .filter(Value::is_object)
            .ok_or_else(|| corrupt("no `document` mapping".into()))?;
        secrets::open(&mut doc, self.secret.as_ref())?;
        let revision = env.get("revision").and_then(Value::as_i64).unwrap_or(0);
        Ok((doc, revision))
    }

    /// Takes a stored value as the current shared document. Returns whether
    /// it differs from what this node had.
    fn accept(&self, stored: Stored) -> Result<bool, StoreError> {
        let (doc, _) = self.decode(&stored.value)?;
        let mut s = self.state();
        if s.revision == stored.mod_revision && s.shared == doc {
            return Ok(false);
        }
        s.shared = doc;
        s.revision = stored.mod_revision;
        drop(s);
        self.save_cache(&stored.value, stored.mod_revision);
        Ok(true)
    }

    fn save_cache(&self, envelope: &[u8], revision: i64) {
        let mut env: Value = match serde_json::from_slice(envelope) {
            Ok(v) => v,
            Err(_) => return,
        };
        env["revision"] = json!(revision);
        let bytes = env.to_string().into_bytes();
        if let Err(e) = super::file::write_atomic(&self.cache, &bytes) {
            tracing::warn!(cache = %self.cache.display(), error = %e, "cannot write the cluster cache copy");
        }
    }

    /// Stores `shared` if etcd still holds revision `expected` (0: nothing
    /// yet). On success this node's state is the new document; on a
    /// conflict it is what etcd holds now, and the error says its revision.
    pub async fn write(&self, shared: &Value, expected: i64) -> Result<i64, StoreError> {
        let mut sealed = Cluster::shared_part(shared);
        if let Some(k) = &self.secret {
            secrets::seal(&mut sealed, k);
        }
        let envelope = json!({
            "format": FORMAT,
            "written_by": concat!("portcullis ", env!("CARGO_PKG_VERSION")),
            "document": sealed,
        })
        .to_string()
        .into_bytes();
        match self.client.put_if(&self.key, &envelope, expected).await? {
            CasOutcome::Written { revision } => {
                {
                    let mut s = self.state();
                    s.shared = Cluster::shared_part(shared);
                    s.revision = revision;
                }
                self.save_cache(&envelope, revision);
                Ok(revision)
            }
            CasOutcome::Conflict { current } => {
                let now = current.as_ref().map_or(0, |c| c.mod_revision);
                match current {
                    Some(c) => {
                        self.accept(c)?;
                    }
                    // The key was deleted: the next attempt creates it again.
                    None => self.state().revision = 0,
                }
                Err(StoreError::Conflict(now))
            }
        }
    }

    /// Follows the store until the task is stopped: applies every new
    /// version through `changed`, and after losing etcd reads the current
    /// version again as soon as it answers (then watches from there).
    pub async fn follow(self: Arc<Self>, changed: Arc<dyn Fn() + Send + Sync>) {
        let mut backoff = Duration::from_millis(100);
        let mut was_down = false;
        loop {
            match self.client.get(&self.key).await {
                Ok(Some(stored)) => {
                    if was_down {
                        tracing::info!(endpoints = %self.endpoints, "etcd answers again; resynchronised");
                        was_down = false;
                    }
                    self.take(stored, &changed);
                }
                Ok(None) => {
                    // etcd lost the document (a new, empty etcd): store ours again.
                    let (doc, _) = self.shared();
                    tracing::warn!("etcd has no configuration; storing this node's copy again");
                    let _ = self.write(&doc, 0).await;
                }
                Err(e) => {
                    if !was_down {
                        tracing::warn!(error = %e, "etcd is unreachable; serving the last configuration until it returns");
                        was_down = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
            backoff = Duration::from_millis(100);
            let from = self.state().revision + 1;
            let mut watch = match self.client.watch(&self.key, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch etcd; retrying");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            loop {
                match watch.next().await {
                    Ok(Some(WatchEvent::Put(stored))) => self.take(stored, &changed),
                    Ok(Some(WatchEvent::Deleted { .. })) => {
                        tracing::warn!(
                            "the configuration key was deleted from etcd; storing this node's copy again"
                        );
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the etcd watch; serving the last configuration");
                        was_down = true;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn take(&self, stored: Stored, changed: &Arc<dyn Fn() + Send + Sync>) {
        let revision = stored.mod_revision;
        match self.accept(stored) {
            Ok(true) => {
                tracing::info!(etcd_revision = revision, "new configuration from etcd");
                changed();
            }
            Ok(false) => {}
            Err(e) => tracing::error!(
                etcd_revision = revision,
                "ignoring the configuration in etcd, the last one keeps serving: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::control::EtcdDoc;
    use crate::config::units::HumanDuration;

    fn cluster(dir: &Path) -> Cluster {
        let doc = ClusterDoc {
            etcd: EtcdDoc {
                endpoints: vec!["http://127.0.0.1:1".into()],
                prefix: "/p".into(),
                timeout: HumanDuration(Duration::from_millis(200)),
                tls: None,
                username: None,
                password: None,
            },
            cache: None,
            encryption_key: None,
        };
        Cluster::new(&doc, &dir.join("node.yaml")).expect("cluster")
    }

    #[test]
    fn merging_keeps_local_sections_local() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cluster(dir.path());
        c.state().shared =
            json!({"routes": [{"name": "shared"}], "listeners": [{"name": "ignored"}]});
        let node = json!({"listeners": [{"name": "mine"}], "routes": [{"name": "ignored"}], "admin": {"address": "x"}});
        let merged = c.merge(&node);
        assert_eq!(merged["listeners"][0]["name"], "mine");
        assert_eq!(merged["routes"][0]["name"], "shared");
        assert_eq!(merged["admin"]["address"], "x");
        assert_eq!(
            Cluster::shared_part(&merged),
            json!({"routes": [{"name": "shared"}]})
        );
    }

    #[test]
    fn newer_formats_and_garbage_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cluster(dir.path());
        let newer =
            json!({"format": 2, "written_by": "portcullis 9.0.0", "document": {}}).to_string();
        let e = c.decode(newer.as_bytes()).expect_err("newer");
        assert!(e.to_string().contains("portcullis 9.0.0"), "{e}");
        assert!(matches!(c.decode(b"nope"), Err(StoreError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn unreachable_etcd_without_a_cache_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cluster(dir.path());
        let e = c.bootstrap(json!({})).await.expect_err("no etcd");
        assert!(e.to_string().contains("no cached copy"), "{e}");
        std::fs::write(
            dir.path().join("node.yaml.cluster-cache.json"),
            json!({"format": 1, "revision": 7, "document": {"routes": []}}).to_string(),
        )
        .expect("cache");
        assert_eq!(
            c.bootstrap(json!({})).await.expect("from cache"),
            "the cached copy (etcd unreachable)"
        );
        assert_eq!(c.shared().1, 7);
    }
}
