//! Observability: Prometheus metrics, the JSON access log, W3C trace
//! context with OTLP export, and the gateway's own diagnostic log (whose
//! level can be changed at run time through the admin listener).
//!
//! What a snapshot records is compiled into its [`Observe`]; the sinks
//! (metric families, log writer, span exporter) outlive snapshots and are
//! shared by every snapshot with the same settings.

pub mod access_log;
pub mod metrics;
pub mod otlp;
pub mod request;
pub mod scrape;
pub mod span;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::Document;
use crate::plugins::StateStore;
use crate::snapshot::ListenerKey;
use access_log::AccessLog;
use metrics::{Metrics, RouteMetrics};
use prometheus_client::metrics::counter::Counter;
use span::Tracer;

/// What one snapshot records, and where.
#[derive(Debug, Default)]
pub struct Observe {
    /// The metric families, when metrics are recorded (an admin listener
    /// serves them and `observability.metrics.enabled` is on).
    pub metrics: Option<Arc<Metrics>>,
    /// Per-route handles, by route index (empty without metrics).
    pub routes: Vec<RouteMetrics>,
    /// Handles for requests that matched no route (with metrics).
    pub unmatched: Option<RouteMetrics>,
    /// Count requests by consumer too.
    pub consumer_label: bool,
    /// The access log.
    pub access_log: Option<Arc<AccessLog>>,
    /// Trace sampling and export.
    pub tracer: Option<Arc<Tracer>>,
    /// TLS handshake failure counters, by listener.
    pub tls_failures: Vec<(ListenerKey, Counter)>,
    /// No listener, route or upstream name and no target address needs
    /// JSON escaping, so access log lines copy them unchecked.
    pub names_plain: bool,
}

impl Observe {
    /// Whether requests are recorded at all (the request path skips the
    /// log phase otherwise).
    pub fn active(&self) -> bool {
        self.metrics.is_some() || self.access_log.is_some() || self.tracer.is_some()
    }

    /// Counts a failed TLS handshake on listener `key`.
    pub fn tls_failure(&self, key: ListenerKey) {
        if let Some((_, c)) = self.tls_failures.iter().find(|(k, _)| *k == key) {
            c.inc();
        }
    }
}

/// Sinks shared by snapshots with the same settings, kept in the plugin
/// state store so a reload that keeps them keeps their threads.
struct Sink<T>(Mutex<Option<Result<Arc<T>, String>>>);

impl<T> Default for Sink<T> {
    fn default() -> Self {
        Sink(Mutex::new(None))
    }
}

impl<T> Sink<T> {
    fn get_or_start(&self, start: impl FnOnce() -> Result<T, String>) -> Result<Arc<T>, String> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(|| start().map(Arc::new)).clone()
    }
}

/// Whether `doc` records metrics: they are on and an admin listener serves them.
pub fn recording(doc: &Document) -> bool {
    doc.observability.metrics.enabled && doc.admin.is_some()
}

/// Compiles the observability settings of `doc`. `routes` and `listeners`
/// are the snapshot's, in order. Errors are `(path, message)`.
pub fn compile(
    doc: &Document,
    base: &Path,
    state: &StateStore,
    listeners: &[(ListenerKey, Arc<str>)],
) -> Result<Observe, Vec<(String, String)>> {
    let obs = &doc.observability;
    let mut errors = Vec::new();
    let metrics = state.metrics(&obs.metrics.latency_buckets);
    let recording = recording(doc);
    if state.is_inert() {
        // Checking only: what can be checked without starting the sinks.
        if let Some(t) = &obs.tracing {
            if let Err(e) = otlp::check(t, base) {
                errors.push(("observability.tracing".to_string(), e));
            }
        }
        return if errors.is_empty() {
            Ok(Observe::default())
        } else {
            Err(errors)
        };
    }
    let access_log = match &obs.access_log {
        Some(a) => {
            let key = format!("{a:?}|{}", base.display());
            let sink = state.get::<Sink<AccessLog>>(&format!("access_log:{key}"), Sink::default);
            match sink.get_or_start(|| AccessLog::start(a, base, metrics.clone())) {
                Ok(log) => Some(log),
                Err(e) => {
                    errors.push(("observability.access_log".into(), e));
                    None
                }
            }
        }
        None => None,
    };
    let tracer = match &obs.tracing {
        Some(t) => {
            let key = format!("{t:?}|{}", base.display());
            let sink = state.get::<Sink<Tracer>>(&format!("tracer:{key}"), Sink::default);
            let started = sink.get_or_start(|| {
                let exporter = otlp::Exporter::start(t, base, metrics.clone())?;
                Ok(Tracer::new(
                    t.sample_ratio,
                    t.always_sample_errors,
                    exporter,
                ))
            });
            match started {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(("observability.tracing".into(), e));
                    None
                }
            }
        }
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let routes = if recording {
        doc.routes
            .iter()
            .map(|r| RouteMetrics::new(r.name.as_str().into(), metrics.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let names_plain = doc
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .chain(doc.routes.iter().map(|r| r.name.as_str()))
        .chain(doc.upstreams.iter().flat_map(|u| {
            std::iter::once(u.name.as_str()).chain(u.targets.iter().map(|t| t.address.as_str()))
        }))
        .all(access_log::is_plain);
    Ok(Observe {
        names_plain,
        unmatched: recording.then(|| RouteMetrics::new("".into(), metrics.clone())),
        tls_failures: listeners
            .iter()
            .map(|(k, name)| {
                (
                    *k,
                    metrics
                        .tls_failures
                        .get_or_create_owned(&[("listener", name.clone())]),
                )
            })
            .collect(),
        metrics: recording.then_some(metrics),
        routes,
        consumer_label: obs.metrics.consumer_label,
        access_log,
        tracer,
    })
}

/// Changes the diagnostic log's filter at run time.
pub type LogLevelHandle = reload::Handle<EnvFilter, Registry>;

static LOG_LEVEL: OnceLock<(LogLevelHandle, Mutex<String>)> = OnceLock::new();

/// Installs the global log subscriber. `PORTCULLIS_LOG` (or `RUST_LOG`)
/// sets levels, like `info` or `portcullis=debug`; `json` switches to one JSON
/// object per line. Safe to call more than once (later calls do nothing).
pub fn init_logging(json: bool) {
    let spec = std::env::var("PORTCULLIS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| "info".to_string());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&spec));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    if installed.is_ok() {
        let _ = LOG_LEVEL.set((handle, Mutex::new(spec)));
    }
}

/// The diagnostic log's current filter, like `info,portcullis::proxy=debug`;
/// `None` when the gateway did not install the log (embedded use, tests).
pub fn log_level() -> Option<String> {
    let (_, spec) = LOG_LEVEL.get()?;
    Some(spec.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Replaces the diagnostic log's filter; the error says what is wrong.
pub fn set_log_level(spec: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(spec).map_err(|e| {
        format!("`{spec}` is not a log filter ({e}); use a level like `debug` or directives like `info,portcullis::proxy=debug`")
    })?;
    let (handle, current) = LOG_LEVEL
        .get()
        .ok_or_else(|| "the diagnostic log is not managed by this process".to_string())?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log filter: {e}"))?;
    *current.lock().unwrap_or_else(|e| e.into_inner()) = spec.to_string();
    tracing::info!(filter = spec, "log filter changed");
    Ok(())
}
