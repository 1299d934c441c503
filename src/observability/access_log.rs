//! The access log: one JSON line per request, formatted and written by its
//! own thread. The request path only hands over an [`Entry`] through a
//! bounded queue; when the writer falls behind, entries are dropped and
//! counted instead of slowing requests down. Files are reopened on
//! `SIGUSR1` (see [`request_reopen`]) so logrotate can move them away.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use super::metrics::Metrics;
use super::span::hex;
use crate::config::observability::ACCESS_LOG_FIELDS;
use crate::config::AccessLogDoc;

/// How long the writer sleeps when the queue is empty.
const NAP: Duration = Duration::from_millis(5);

/// Bumped by `SIGUSR1`; each writer reopens its file when it sees a new value.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every access log writer to reopen its file (log rotation).
pub fn request_reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// What is known about a finished request. Built on the request path from
/// cheap clones; formatted on the writer thread.
#[derive(Debug)]
pub struct Entry {
    /// Arrival, Unix nanoseconds.
    pub time_unix_ns: u64,
    /// The request ID.
    pub request_id: HeaderValue,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The listener's name.
    pub listener: Option<Arc<str>>,
    /// HTTP version.
    pub protocol: Version,
    /// Method.
    pub method: Method,
    /// Host, from the request target or `Host`.
    pub host: Option<HeaderValue>,
    /// The request target as received.
    pub uri: Uri,
    /// The matched route.
    pub route: Option<Arc<str>>,
    /// The upstream's name.
    pub upstream: Option<Arc<str>>,
    /// The target that answered.
    pub upstream_target: Option<Arc<str>>,
    /// Response status.
    pub status: u16,
    /// The gateway's error code, when the gateway answered with an error.
    pub error: Option<&'static str>,
    /// Request body bytes received.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Arrival to the end of the response.
    pub duration: Duration,
    /// Sending upstream to its response headers (retries included).
    pub upstream_duration: Option<Duration>,
    /// Arrival to the response headers, less the upstream's part.
    pub gateway_duration: Duration,
    /// The authenticated consumer.
    pub consumer: Option<Arc<str>>,
    /// `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// `TLSv1.3` or `TLSv1.2` on TLS connections.
    pub tls_version: Option<&'static str>,
    /// The trace, when tracing is on.
    pub trace_id: Option<[u8; 16]>,
    /// The gateway's span.
    pub span_id: Option<[u8; 8]>,
    /// The configured request headers, in order.
    pub headers: Vec<Option<HeaderValue>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    RequestId,
    ClientIp,
    Listener,
    Protocol,
    Method,
    Host,
    Path,
    Query,
    Route,
    Upstream,
    UpstreamTarget,
    Status,
    Error,
    RequestBytes,
    ResponseBytes,
    DurationMs,
    UpstreamMs,
    GatewayMs,
    Consumer,
    UserAgent,
    TlsVersion,
    TraceId,
    SpanId,
}

const FIELDS: [Field; 24] = [
    Field::Time,
    Field::RequestId,
    Field::ClientIp,
    Field::Listener,
    Field::Protocol,
    Field::Method,
    Field::Host,
    Field::Path,
    Field::Query,
    Field::Route,
    Field::Upstream,
    Field::UpstreamTarget,
    Field::Status,
    Field::Error,
    Field::RequestBytes,
    Field::ResponseBytes,
    Field::DurationMs,
    Field::UpstreamMs,
    Field::GatewayMs,
    Field::Consumer,
    Field::UserAgent,
    Field::TlsVersion,
    Field::TraceId,
    Field::SpanId,
];

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// How lines are formatted.
#[derive(Debug)]
struct Format {
    fields: Vec<(Field, &'static str)>,
    headers: Vec<String>,
    redact: Vec<String>,
}

/// One configured access log: the queue into its writer thread.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    /// The request headers to copy into entries, in order.
    pub headers: Vec<HeaderName>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts a writer for `doc`; relative file paths are taken from `base`.
    /// A file that cannot be opened is reported and retried on `SIGUSR1`
    /// and every ten seconds; requests are served meanwhile.
    pub fn start(
        doc: &AccessLogDoc,
        base: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> Result<AccessLog, String> {
        let names: Vec<&str> = match &doc.fields {
            Some(f) => f.iter().map(String::as_str).collect(),
            None => ACCESS_LOG_FIELDS.to_vec(),
        };
        let fields = names
            .iter()
            .filter_map(|n| {
                let i = ACCESS_LOG_FIELDS.iter().position(|k| k == n)?;
                Some((FIELDS[i], ACCESS_LOG_FIELDS[i]))
            })
            .collect();
        let headers: Vec<HeaderName> = doc
            .headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        let output = match doc.output.as_str() {
            "stdout" => Output::Stdout,
            "stderr" => Output::Stderr,
            p => Output::File(base.join(p)),
        };
        let format = Format {
            fields,
            headers: headers.iter().map(|h| format!("header.{h}")).collect(),
            redact: doc
                .redact_query
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
        };
        let (tx, rx) = mpsc::sync_channel(doc.buffer);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("portcullis-access-log".into())
            .spawn(move || Writer::new(output, m).run(rx, &format))
            .map_err(|e| format!("cannot start the access log thread: {e}"))?;
        Ok(AccessLog {
            tx,
            headers,
            metrics,
        })
    }

    /// Queues an entry, or drops it (counted) when the writer is behind.
    pub fn push(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.inc();
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    output: Output,
    sink: Option<BufWriter<Box<dyn Write + Send>>>,
    seen_reopen: u64,
    last_attempt: Option<Instant>,
    last_error_log: Option<Instant>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn new(output: Output, metrics: Arc<Metrics>) -> Writer {
        let mut w = Writer {
            output,
            sink: None,
            seen_reopen: REOPEN.load(Ordering::Relaxed),
            last_attempt: None,
            last_error_log: None,
            metrics,
        };
        w.open();
        w
    }

    fn open(&mut self) {
        self.last_attempt = Some(Instant::now());
        let sink: Box<dyn Write + Send> = match &self.output {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::Stderr => Box::new(std::io::stderr()),
            Output::File(p) => match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => Box::new(f) as Box<dyn Write + Send>,
                Err(e) => {
                    tracing::error!(file = %p.display(), error = %e, "cannot open the access log; requests are served but not logged until it can be opened (retried every 10s and on SIGUSR1)");
                    self.sink = None;
                    return;
                }
            },
        };
        self.sink = Some(BufWriter::with_capacity(64 * 1024, sink));
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.metrics.access_log_errors.inc();
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now - t > Duration::from_secs(10))
        {
            self.last_error_log = Some(now);
            tracing::error!(error = %e, "cannot write the access log; lines are lost until it recovers");
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Entry>, format: &Format) {
        let mut line = Vec::with_capacity(1024);
        let mut clock = TimeCache::default();
        let mut dirty = false;
        loop {
            // Polled, never parked on the channel: a parked receiver would
            // make every request pay a wake-up. Lines wait at most one nap.
            let entry = match rx.try_recv() {
                Ok(e) => e,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.flush();
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => {
                    if dirty {
                        self.flush();
                        dirty = false;
                    }
                    self.maintain();
                    std::thread::sleep(NAP);
                    continue;
                }
            };
            line.clear();
            format.write(&entry, &mut line, &mut clock);
            match self.sink.as_mut() {
                Some(sink) => {
                    dirty = true;
                    if let Err(e) = sink.write_all(&line) {
                        self.failed(&e);
                    }
                }
                None => {
                    self.metrics.access_log_errors.inc();
                }
            }
        }
    }

    /// Reopens after `SIGUSR1`, and retries a file that could not be opened.
    fn maintain(&mut self) {
        let generation = REOPEN.load(Ordering::Relaxed);
        if generation != self.seen_reopen {
            self.seen_reopen = generation;
            self.flush();
            self.open();
        } else if self.sink.is_none()
            && self
                .last_attempt
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.open();
        }
    }

    fn flush(&mut self) {
        if let Some(sink) = self.sink.as_mut() {
            if let Err(e) = sink.flush() {
                self.failed(&e);
            }
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Most values need no escaping: copy them as they are.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The formatted time, redone only when the second changes.
#[derive(Default)]
struct TimeCache {
    second: i64,
    text: String,
}

impl TimeCache {
    /// Writes `"2026-11-22T10:00:00.123Z"` for `unix_ns`.
    fn write(&mut self, out: &mut Vec<u8>, unix_ns: u64) {
        let second = (unix_ns / 1_000_000_000) as i64;
        if self.text.is_empty() || second != self.second {
            let ts = jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            self.text = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
            self.second = second;
        }
        let millis = (unix_ns / 1_000_000) % 1000;
        let _ = write!(out, "\"{}.{millis:03}Z\"", self.text);
    }
}

fn push_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_value(out: &mut Vec<u8>, v: Option<&HeaderValue>) {
    match v {
        Some(v) => push_str(out, &String::from_utf8_lossy(v.as_bytes())),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_ms(out: &mut Vec<u8>, d: Duration) {
    let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
}

impl Format {
    fn write(&self, e: &Entry, out: &mut Vec<u8>, clock: &mut TimeCache) {
        out.push(b'{');
        let mut first = true;
        for (field, name) in &self.fields {
            if !first {
                out.push(b',');
            }
            first = false;
            push_str(out, name);
            out.push(b':');
            match field {
                Field::Time => clock.write(out, e.time_unix_ns),
                Field::RequestId => push_value(out, Some(&e.request_id)),
                Field::ClientIp => {
                    let _ = write!(out, "\"{}\"", e.client_ip);
                }
                Field::Listener => push_opt(out, e.listener.as_deref()),
                Field::Protocol => push_str(
                    out,
                    match e.protocol {
                        Version::HTTP_09 => "HTTP/0.9",
                        Version::HTTP_10 => "HTTP/1.0",
                        Version::HTTP_2 => "HTTP/2.0",
                        Version::HTTP_3 => "HTTP/3.0",
                        _ => "HTTP/1.1",
                    },
                ),
                Field::Method => push_str(out, e.method.as_str()),
                Field::Host => push_value(out, e.host.as_ref()),
                Field::Path => push_str(out, e.uri.path()),
                Field::Query => match e.uri.query() {
                    Some(q) => push_str(out, &redact(q, &self.redact)),
                    None => out.extend_from_slice(b"null"),
                },
                Field::Route => push_opt(out, e.route.as_deref()),
                Field::Upstream => push_opt(out, e.upstream.as_deref()),
                Field::UpstreamTarget => push_opt(out, e.upstream_target.as_deref()),
                Field::Status => {
                    let _ = write!(out, "{}", e.status);
                }
                Field::Error => push_opt(out, e.error),
                Field::RequestBytes => {
                    let _ = write!(out, "{}", e.request_bytes);
                }
                Field::ResponseBytes => {
                    let _ = write!(out, "{}", e.response_bytes);
                }
                Field::DurationMs => push_ms(out, e.duration),
                Field::UpstreamMs => match e.upstream_duration {
                    Some(d) => push_ms(out, d),
                    None => out.extend_from_slice(b"null"),
                },
                Field::GatewayMs => push_ms(out, e.gateway_duration),
                Field::Consumer => push_opt(out, e.consumer.as_deref()),
                Field::UserAgent => push_value(out, e.user_agent.as_ref()),
                Field::TlsVersion => push_opt(out, e.tls_version),
                Field::TraceId => push_opt(out, e.trace_id.map(|t| hex(&t)).as_deref()),
                Field::SpanId => push_opt(out, e.span_id.map(|s| hex(&s)).as_deref()),
            }
        }
        for (name, value) in self.headers.iter().zip(&e.headers) {
            if !first {
                out.push(b',');
            }
            first = false;
            push_str(out, name);
            out.push(b':');
            push_value(out, value.as_ref());
        }
        out.extend_from_slice(b"}\n");
    }
}

/// The query with the values of sensitive parameters replaced.
fn redact(query: &str, names: &[String]) -> String {
    query
        .split('&')
        .map(|pair| {
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            if names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                format!("{k}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_query_values_are_redacted() {
        let names = vec!["api_key".to_string(), "token".to_string()];
        assert_eq!(
            redact("a=1&API_KEY=s3cret&token&b=2", &names),
            "a=1&API_KEY=REDACTED&token=REDACTED&b=2"
        );
    }
}
