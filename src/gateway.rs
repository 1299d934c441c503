//! The running gateway: owns the workers, the listening sockets and the
//! current snapshot, and applies new configurations.
//!
//! Applying a document: validate and compile it, bind any new listener
//! addresses, then swap the snapshot in one atomic store, start the new
//! listeners and stop the removed ones. Any failure before the swap leaves
//! the old snapshot and listeners serving untouched.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::admin::{AdminServer, AdminState};

use crate::config::store::cluster::Cluster;
use crate::config::{self, ConfigErrors, LoadedConfig};
use crate::proxy::Shared;
use crate::server::{worker_count, BoundListener, ConnTracker, Workers};
use crate::snapshot::{compile, ListenerKey, Snapshot};
use crate::upstream::dns::{self, Lookup};
use crate::upstream::health::{self, HealthCheck};
use crate::upstream::UpstreamRegistry;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A YAML file, re-read on every reload; Admin API writes are saved to it.
    File(PathBuf),
    /// A document held in memory (tests and embedded defaults).
    Inline(String),
    /// A document written through the Admin API to a gateway that has no
    /// file (kept in memory only).
    Json(serde_json::Value),
    /// Cluster mode: this node's file for its local sections, etcd for the
    /// shared ones.
    Cluster {
        /// The node's file.
        node: PathBuf,
        /// The store.
        cluster: Arc<Cluster>,
    },
}

impl ConfigSource {
    /// Reads and validates the document.
    pub fn load(&self) -> Result<LoadedConfig, ConfigErrors> {
        let env = |k: &str| std::env::var(k).ok();
        match self {
            ConfigSource::File(p) => config::load_file(p),
            ConfigSource::Inline(s) => config::load_str(s, "<inline>", &env),
            ConfigSource::Json(v) => config::document::load_value(v.clone(), "<admin api>", &env),
            ConfigSource::Cluster { node, cluster } => {
                let local = config::load_file(node)?;
                let merged = cluster.merge(&local.raw);
                config::document::load_value(merged, &node.display().to_string(), &env)
            }
        }
    }

    /// What the Admin API calls this store.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigSource::File(_) => "file",
            ConfigSource::Inline(_) | ConfigSource::Json(_) => "memory",
            ConfigSource::Cluster { .. } => "etcd",
        }
    }
}

/// Why a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The document is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener address could not be bound.
    #[error("listener `{name}` cannot bind {address}: {source}; is another process using it, or does it need privileges?")]
    Bind {
        /// Listener name.
        name: String,
        /// Configured address.
        address: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// The worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    Workers(io::Error),
    /// The configuration store could not be read or written.
    #[error("configuration store: {0}")]
    Store(String),
}

/// Runs `fut` to completion on a thread of its own (with its own runtime),
/// so it works whether or not the caller is inside a runtime.
fn block_on_side<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds (it only needs a thread)")
                .block_on(fut)
        })
        .join()
        .expect("the store bootstrap does not panic")
    })
}

struct Control {
    source: ConfigSource,
    listeners: HashMap<ListenerKey, BoundListener>,
    revision: u64,
    pools: UpstreamRegistry,
    workers: Workers,
    /// Running health probes, by upstream, target and check settings.
    probes: HashMap<(String, String, HealthCheck), tokio::task::AbortHandle>,
    /// Running DNS resolvers, by target name and refresh interval.
    resolvers: HashMap<(String, std::time::Duration), tokio::task::AbortHandle>,
    /// How names are looked up.
    lookup: Lookup,
    /// The task following the cluster store, in cluster mode.
    follower: Option<tokio::task::AbortHandle>,
    /// Plugin state kept across reloads (key sets, caches).
    plugin_state: crate::plugins::StateStore,
    /// Running plugin background tasks, by key.
    background: HashMap<String, tokio::task::AbortHandle>,
    /// The admin listener, when configured.
    admin: Option<AdminServer>,
    /// What the admin endpoints read.
    admin_state: AdminState,
}

/// How a gateway is started besides its configuration.
pub struct StartOptions {
    /// How target names are resolved.
    pub lookup: Lookup,
    /// The time rate limits and quotas count with.
    pub clock: crate::clock::Clock,
}

impl Default for StartOptions {
    /// The system resolver and the system clock.
    fn default() -> Self {
        StartOptions {
            lookup: dns::system_lookup(),
            clock: crate::clock::Clock::system(),
        }
    }
}

/// A running gateway. Dropping it stops the workers without draining; call
/// [`Gateway::shutdown`] for a graceful stop. Its methods are those of
/// [`Core`], which the Admin API also reaches through a [`GatewayHandle`].
pub struct Gateway {
    core: Arc<Core>,
}

impl std::ops::Deref for Gateway {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(f) = self.control().follower.take() {
            f.abort();
        }
    }
}

/// The gateway's state and the operations on it.
pub struct Core {
    shared: Arc<Shared>,
    tracker: Arc<ConnTracker>,
    control: Mutex<Control>,
    /// Bytes of the config file the Admin API last wrote; the file watcher
    /// skips a change that is exactly that write.
    persisted: Mutex<Option<u64>>,
}

/// A reference from the admin listener back to the gateway that owns it
/// (weak: the gateway owns the listener).
#[derive(Clone, Default)]
pub struct GatewayHandle(std::sync::Weak<Core>);

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayHandle")
    }
}

impl GatewayHandle {
    /// The gateway, unless it is shutting down.
    pub fn get(&self) -> Option<Arc<Core>> {
        self.0.upgrade()
    }
}

impl Gateway {
    /// Loads the configuration, starts the workers and binds every listener.
    pub fn start(source: ConfigSource) -> Result<Gateway, ApplyError> {
        Gateway::start_with_lookup(source, dns::system_lookup())
    }

    /// Like [`Gateway::start`], resolving target names with `lookup` (tests
    /// script DNS answers this way).
    pub fn start_with_lookup(source: ConfigSource, lookup: Lookup) -> Result<Gateway, ApplyError> {
        Gateway::start_with(
            source,
            StartOptions {
                lookup,
                ..StartOptions::default()
            },
        )
    }

    /// Like [`Gateway::start`], with the name lookup and clock given (tests
    /// script DNS answers and move time by hand this way).
    pub fn start_with(source: ConfigSource, options: StartOptions) -> Result<Gateway, ApplyError> {
        let StartOptions { lookup, clock } = options;
        let mut source = source;
        let mut loaded = source.load()?;
        if let (ConfigSource::File(path), Some(doc)) = (&source, &loaded.doc.cluster) {
            let cluster = crate::config::store::cluster::Cluster::new(doc, path)
                .map_err(|m| ApplyError::Store(format!("{}: {m}", path.display())))?;
            let cluster = Arc::new(cluster);
            let seed = crate::config::store::cluster::Cluster::shared_part(&loaded.raw);
            let origin = block_on_side({
                let cluster = cluster.clone();
                async move { cluster.bootstrap(seed).await }
            })
            .map_err(|e| ApplyError::Store(e.to_string()))?;
            tracing::info!(
                endpoints = cluster.endpoints(),
                from = origin,
                "cluster mode: configuration from etcd"
            );
            source = ConfigSource::Cluster {
                node: path.clone(),
                cluster,
            };
            loaded = source.load()?;
        }
        let n = worker_count(loaded.doc.gateway.workers);
        let workers = Workers::spawn(n).map_err(ApplyError::Workers)?;
        let pools = UpstreamRegistry::default();
        let plugin_state = crate::plugins::StateStore::with_clock(clock);
        plugin_state.begin();
        let snap =
            compile(&loaded, 1, n, &pools, &plugin_state).map_err(|errors| ConfigErrors {
                source_name: loaded.source_name.clone(),
                errors,
            })?;
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
        });
        let tracker = Arc::new(ConnTracker::default());
        let control = Control {
            source,
            follower: None,
            listeners: HashMap::new(),
            revision: 1,
            pools,
            workers,
            probes: HashMap::new(),
            resolvers: HashMap::new(),
            lookup,
            plugin_state,
            background: HashMap::new(),
            admin: None,
            admin_state: AdminState {
                shared: shared.clone(),
                tracker: tracker.clone(),
                draining: Arc::new(AtomicBool::new(false)),
                gateway: GatewayHandle::default(),
                writes: Arc::new(tokio::sync::Mutex::new(())),
            },
        };
        let core = Arc::new_cyclic(|weak: &std::sync::Weak<Core>| {
            let mut control = control;
            control.admin_state.gateway = GatewayHandle(weak.clone());
            Core {
                shared,
                tracker,
                control: Mutex::new(control),
                persisted: Mutex::new(None),
            }
        });
        {
            let mut control = core.control();
            let snap = core.shared.snapshot.load_full();
            let fresh = bind_new(&control, &snap)?;
            let admin = bind_admin(&control, &snap)?;
            install(&mut control, &snap, fresh, &core.shared, &core.tracker);
            if let Some(a) = admin {
                control.admin = a;
            }
            count_reload(&control, true);
            if let ConfigSource::Cluster { cluster, .. } = &control.source {
                let weak = Arc::downgrade(&core);
                let changed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    if let Some(core) = weak.upgrade() {
                        crate::reload::log_outcome(core.reload(), "etcd");
                    }
                });
                let task = control.workers.handles()[0].spawn(cluster.clone().follow(changed));
                control.follower = Some(task.abort_handle());
            }
            tracing::info!(
                workers = n,
                listeners = ?control.listeners.values().map(|b| b.local.to_string()).collect::<Vec<_>>(),
                routes = snap.routes.len(),
                store = control.source.kind(),
                "gateway started"
            );
        }
        Ok(Gateway { core })
    }
}

impl Core {
    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        // A panic while holding the lock leaves no partial state worth refusing.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the configuration source and applies it; returns the new revision.
    pub fn reload(&self) -> Result<u64, ApplyError> {
        let source = self.control().source.clone();
        let loaded = source
            .load()
            .inspect_err(|_| count_reload(&self.control(), false))?;
        self.apply(loaded)
    }

    /// Applies a validated document; returns the new revision. On error
    /// nothing changes.
    pub fn apply(&self, loaded: LoadedConfig) -> Result<u64, ApplyError> {
        let mut c = self.control();
        let result = self.apply_locked(&mut c, loaded);
        count_reload(&c, result.is_ok());
        result
    }

    fn apply_locked(&self, c: &mut Control, loaded: LoadedConfig) -> Result<u64, ApplyError> {
        let n = c.workers.len();
        if worker_count(loaded.doc.gateway.workers) != n {
            tracing::warn!(
                "`gateway.workers` changed; the new worker count applies after a restart"
            );
        }
        let revision = c.revision + 1;
        let generation = c.plugin_state.begin();
        let snap = compile(&loaded, revision, n, &c.pools, &c.plugin_state).map_err(|errors| {
            ConfigErrors {
                source_name: loaded.source_name.clone(),
                errors,
            }
        })?;
        let snap = Arc::new(snap);
        let fresh = bind_new(c, &snap)?;
        let admin = bind_admin(c, &snap)?;
        self.shared.snapshot.store(snap.clone());
        c.plugin_state.retain_generation(generation);
        c.revision = revision;
        install(c, &snap, fresh, &self.shared, &self.tracker);
        if let Some(a) = admin {
            if let Some(old) = &c.admin {
                tracing::info!(address = %old.local, "admin listener removed");
            }
            c.admin = a;
        }
        tracing::info!(
            revision,
            routes = snap.routes.len(),
            listeners = snap.listeners.len(),
            "configuration applied"
        );
        Ok(revision)
    }

    /// Where the configuration comes from now.
    pub fn source(&self) -> ConfigSource {
        self.control().source.clone()
    }

    /// Applies `loaded` and, when that works, makes `source` the place
    /// later reloads read from (an Admin API write to a gateway without a
    /// file keeps its document this way).
    pub fn apply_from(
        &self,
        source: ConfigSource,
        loaded: LoadedConfig,
    ) -> Result<u64, ApplyError> {
        let mut c = self.control();
        let result = self.apply_locked(&mut c, loaded);
        count_reload(&c, result.is_ok());
        if result.is_ok() {
            c.source = source;
        }
        result
    }

    /// Records the config file bytes the Admin API just wrote, so the file
    /// watcher does not reload the gateway's own write.
    pub fn note_persisted(&self, bytes: &[u8]) {
        *self.persisted.lock().unwrap_or_else(|e| e.into_inner()) = Some(content_hash(bytes));
    }

    /// Whether `bytes` are what the Admin API last wrote to the file.
    pub fn is_own_write(&self, bytes: &[u8]) -> bool {
        *self.persisted.lock().unwrap_or_else(|e| e.into_inner()) == Some(content_hash(bytes))
    }

    /// The snapshot new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The address a listener is actually bound to (resolves port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        let snap = self.snapshot();
        let l = snap.listeners.iter().find(|l| &*l.name == name)?;
        self.control().listeners.get(&l.key).map(|b| b.local)
    }

    /// The address the admin listener is bound to, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.control().admin.as_ref().map(|a| a.local)
    }

    /// Client connections open now.
    pub fn active_connections(&self) -> usize {
        self.tracker.active()
    }

    /// Stops accepting, lets in-flight requests finish for up to the
    /// configured grace period, then stops the workers. Returns true when
    /// every connection drained in time.
    pub async fn shutdown(&self) -> bool {
        let grace = self.snapshot().settings.shutdown_grace;
        {
            let c = self.control();
            c.admin_state.draining.store(true, Ordering::Relaxed);
            for l in c.listeners.values() {
                l.stop();
            }
        }
        let drained = self.tracker.wait_drained(grace).await;
        if !drained {
            tracing::warn!(
                open = self.tracker.active(),
                "grace period over; closing remaining connections"
            );
        }
        let threads = {
            let mut c = self.control();
            c.listeners.clear();
            c.admin = None;
            c.workers.stop()
        };
        // Joined off this task's thread: shutdown runs on an async runtime
        // (the signal handler's, or a test's), whose thread must stay free
        // for the tasks it runs while the workers wind down.
        let panicked = tokio::task::spawn_blocking(move || crate::server::workers::join(threads))
            .await
            .unwrap_or(1);
        if panicked > 0 {
            tracing::warn!(workers = panicked, "worker threads panicked while stopping");
        }
        drained
    }
}

/// Starts a health probe for every (upstream, target, check) of `snap` that
/// has none, and stops the probes `snap` no longer needs. Probes run on the
/// workers' event loops, spread round robin; their verdicts live in the
/// targets' stats, so restarting a probe keeps its target's state.
fn sync_probes(c: &mut Control, snap: &Snapshot) {
    let mut wanted = HashMap::new();
    for u in &snap.upstreams {
        let Some(check) = &u.guards.check else {
            continue;
        };
        for (t, stats) in u.targets.iter().zip(&u.stats) {
            let key = (u.name.to_string(), t.address.to_string(), (**check).clone());
            wanted.insert(
                key,
                (
                    check.clone(),
                    u.transport.tls.clone(),
                    u.name.clone(),
                    t.address.clone(),
                    stats.clone(),
                ),
            );
        }
    }
    c.probes.retain(|key, task| {
        let keep = wanted.contains_key(key);
        if !keep {
            task.abort();
        }
        keep
    });
    let handles = c.workers.handles();
    for (key, (check, tls, upstream, address, stats)) in wanted {
        if c.probes.contains_key(&key) {
            continue;
        }
        let handle = &handles[c.probes.len() % handles.len()];
        let task = handle.spawn(health::run(check, tls, upstream, address, stats));
        c.probes.insert(key, task.abort_handle());
    }
}

/// Keeps one resolver task per target name (and refresh interval) in use by
/// `snap`, like [`sync_probes`]. The address sets live in the registry, so a
/// restarted resolver keeps its last good answer.
fn sync_resolvers(c: &mut Control, snap: &Snapshot) {
    // One resolver per name: upstreams sharing a name share its address set,
    // refreshed at the shortest of their intervals.
    let mut by_name: HashMap<String, (Arc<dns::Resolved>, std::time::Duration)> = HashMap::new();
    for u in &snap.upstreams {
        for t in &u.targets {
            if let Some(r) = &t.resolved {
                let every = u.transport.dns_refresh;
                let e = by_name
                    .entry(t.address.to_string())
                    .or_insert((r.clone(), every));
                e.1 = e.1.min(every);
            }
        }
    }
    let wanted: HashMap<(String, std::time::Duration), Arc<dns::Resolved>> = by_name
        .into_iter()
        .map(|(name, (r, every))| ((name, every), r))
        .collect();
    c.resolvers.retain(|key, task| {
        let keep = wanted.contains_key(key);
        if !keep {
            task.abort();
        }
        keep
    });
    let handles = c.workers.handles();
    for ((address, every), resolved) in wanted {
        if c.resolvers.contains_key(&(address.clone(), every)) {
            continue;
        }
        let handle = &handles[c.resolvers.len() % handles.len()];
        let task = handle.spawn(dns::run(resolved, c.lookup.clone(), every));
        c.resolvers.insert((address, every), task.abort_handle());
    }
}

/// Keeps one task per plugin background job (JWKS refreshes) that `snap`
/// needs, like [`sync_probes`]; the jobs' state lives in the plugin state
/// store, so a restarted job keeps what it had fetched.
fn sync_background(c: &mut Control, snap: &Snapshot) {
    let wanted: HashMap<&str, &Arc<dyn crate::plugins::Background>> = snap
        .background
        .iter()
        .map(|(k, b)| (k.as_str(), b))
        .collect();
    c.background.retain(|key, task| {
        let keep = wanted.contains_key(key.as_str());
        if !keep {
            task.abort();
        }
        keep
    });
    let handles = c.workers.handles();
    for (key, job) in wanted {
        if c.background.contains_key(key) {
            continue;
        }
        let handle = &handles[c.background.len() % handles.len()];
        let task = handle.spawn(job.clone().run());
        c.background.insert(key.to_string(), task.abort_handle());
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Counts a configuration load in the metrics.
fn count_reload(c: &Control, ok: bool) {
    if let Some(m) = c.plugin_state.metrics_handle() {
        let result = if ok { "success" } else { "failure" };
        m.reloads.get_or_create(&[("result", result.into())]).inc();
    }
}

/// Binds the admin listener when `snap` moves it: `Some(new)` replaces the
/// current one (`Some(None)` removes it), `None` keeps it.
#[allow(clippy::option_option)]
fn bind_admin(c: &Control, snap: &Snapshot) -> Result<Option<Option<AdminServer>>, ApplyError> {
    let wanted = snap.settings.admin;
    if c.admin.as_ref().map(|a| a.configured) == wanted {
        return Ok(None);
    }
    let Some(addr) = wanted else {
        return Ok(Some(None));
    };
    let handle = &c.workers.handles()[0];
    let server = AdminServer::start(addr, handle, c.admin_state.clone()).map_err(|source| {
        ApplyError::Bind {
            name: "admin".into(),
            address: addr,
            source,
        }
    })?;
    tracing::info!(address = %server.local, "admin listener (metrics, health, log level)");
    Ok(Some(Some(server)))
}

/// Binds the listener addresses of `snap` that are not bound yet.
fn bind_new(c: &Control, snap: &Snapshot) -> Result<Vec<(ListenerKey, BoundListener)>, ApplyError> {
    let mut fresh = Vec::new();
    for l in &snap.listeners {
        if c.listeners.contains_key(&l.key) {
            continue;
        }
        let bound =
            BoundListener::bind(l.address, c.workers.len()).map_err(|source| ApplyError::Bind {
                name: l.name.to_string(),
                address: l.address,
                source,
            })?;
        fresh.push((l.key, bound));
    }
    Ok(fresh)
}

/// Starts freshly bound listeners and stops those `snap` no longer has.
fn install(
    c: &mut Control,
    snap: &Snapshot,
    fresh: Vec<(ListenerKey, BoundListener)>,
    shared: &Arc<Shared>,
    tracker: &Arc<ConnTracker>,
) {
    for (key, mut bound) in fresh {
        bound.start(key, c.workers.handles(), shared, tracker);
        tracing::info!(address = %bound.local, "listening");
        c.listeners.insert(key, bound);
    }
    sync_probes(c, snap);
    sync_resolvers(c, snap);
    sync_background(c, snap);
    c.listeners.retain(|key, bound| {
        let keep = snap.listener(*key).is_some();
        if !keep {
            tracing::info!(address = %bound.local, "listener removed; draining its connections");
            bound.stop();
        }
        keep
    });
}
