//! The access log: one JSON line per request. The worker that served the
//! request formats the line into a buffer of its own when the response is
//! done; a writer thread takes the buffers every few milliseconds and
//! writes them, so no file I/O happens on a worker. At most `buffer` lines
//! wait; beyond that, lines are dropped and counted instead of slowing
//! requests down. Files are reopened on `SIGUSR1` (see [`request_reopen`])
//! so logrotate can move them away.

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HeaderName;

mod format;

pub use format::{is_plain, Entry};
use format::{Format, Lines, TimeCache};

use super::metrics::Metrics;
use crate::config::AccessLogDoc;

/// How long the writer sleeps after a light pass. Every wake-up preempts
/// a worker on a busy core (a context switch each way), so it is long; a
/// worker wakes the writer early when a quarter of `buffer` is waiting.
const NAP: Duration = Duration::from_millis(20);

/// Line buffers per log. Each worker thread appends to one of them, so
/// workers rarely share a lock; the writer takes each buffer in turn.
const SHARDS: usize = 16;

/// Bumped by `SIGUSR1`; each writer reopens its file when it sees a new value.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Hands out shard indexes to threads as they first log.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard (`usize::MAX` until it first logs).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Asks every access log writer to reopen its file (log rotation).
pub fn request_reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// Lines formatted by the workers, waiting for the writer.
#[derive(Debug, Default)]
struct Shard {
    buf: Lines,
    lines: usize,
    clock: TimeCache,
}

/// What the workers and the writer thread share.
#[derive(Debug)]
struct Shared {
    shards: Vec<Mutex<Shard>>,
    /// Lines formatted and not yet written; bounded by `limit`.
    pending: AtomicUsize,
    limit: usize,
    /// Set when the log is dropped: the writer writes what is left and ends.
    closed: AtomicBool,
}

/// One configured access log. The request path formats its line into a
/// per-thread buffer (no allocation, no cross-thread hand-off per
/// request); a writer thread of its own takes the buffers every few
/// milliseconds and writes them, so file I/O never runs on a worker.
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    format: Format,
    /// The request headers to copy into entries, in order.
    pub headers: Vec<HeaderName>,
    metrics: Arc<Metrics>,
    /// The writer thread, woken early when `wake_at` lines wait.
    writer: std::thread::Thread,
    wake_at: usize,
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
        let headers: Vec<HeaderName> = doc
            .headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        let format = Format::new(doc.fields.as_deref(), &headers, &doc.redact_query);
        let output = match doc.output.as_str() {
            "stdout" => Output::Stdout,
            "stderr" => Output::Stderr,
            p => Output::File(base.join(p)),
        };
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pending: AtomicUsize::new(0),
            limit: doc.buffer,
            closed: AtomicBool::new(false),
        });
        let (s, m) = (shared.clone(), metrics.clone());
        let writer = std::thread::Builder::new()
            .name("portcullis-access-log".into())
            .spawn(move || Writer::new(output, m).run(&s))
            .map_err(|e| format!("cannot start the access log thread: {e}"))?
            .thread()
            .clone();
        Ok(AccessLog {
            shared,
            format,
            headers,
            metrics,
            writer,
            wake_at: (doc.buffer / 4).max(1),
        })
    }

    /// Formats the line for `entry` into this thread's buffer, or drops it
    /// (counted) when `buffer` lines are already waiting for the writer.
    pub fn push(&self, entry: &Entry<'_>) {
        let shared = &*self.shared;
        let before = shared.pending.fetch_add(1, Ordering::Relaxed);
        if before >= shared.limit {
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            self.metrics.access_log_dropped.inc();
            return;
        }
        let i = SHARD.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            s.get()
        });
        let mut shard = shared.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        let Shard { buf, lines, clock } = &mut *shard;
        self.format.write(entry, buf, clock);
        *lines += 1;
        drop(shard);
        // Once per crossing, not per line: the writer takes everything.
        if before + 1 == self.wake_at {
            self.writer.unpark();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

/// The writer thread's state.
struct Writer {
    output: Output,
    /// Written to without a buffer of its own: each batch is already a
    /// buffer of many lines, and copying it again cost as much as writing.
    sink: Option<Box<dyn Write + Send>>,
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
        self.sink = Some(sink);
    }

    fn failed(&mut self, e: &std::io::Error, lines: usize) {
        self.metrics.access_log_errors.inc_by(lines as u64);
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now - t > Duration::from_secs(10))
        {
            self.last_error_log = Some(now);
            tracing::error!(error = %e, "cannot write the access log; lines are lost until it recovers");
        }
    }

    fn run(mut self, shared: &Shared) {
        let mut batch = Lines::default();
        loop {
            // Polled, not woken per line: a wake-up would cost every
            // request a futex call and the worker a context switch. Lines
            // wait at most one nap (see `AccessLog::push` for the early wake).
            let closing = shared.closed.load(Ordering::Acquire);
            let mut took = 0;
            for shard in &shared.shards {
                let lines = {
                    let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
                    if s.lines == 0 {
                        continue;
                    }
                    std::mem::swap(&mut s.buf, &mut batch);
                    std::mem::take(&mut s.lines)
                };
                self.write(batch.as_bytes(), lines);
                shared.pending.fetch_sub(lines, Ordering::Relaxed);
                took += lines;
                batch.clear();
                if batch.capacity() > 4 << 20 {
                    batch = Lines::default();
                }
            }
            if took > 0 {
                self.flush();
            }
            if closing {
                // Drain at once until a pass finds nothing.
                if took == 0 {
                    return;
                }
                continue;
            }
            self.maintain();
            if naps_after(took, shared.limit) {
                // Woken early by a filling buffer or the log's end.
                std::thread::park_timeout(NAP);
            }
        }
    }

    /// Writes a batch of `lines` lines; counts them as failed when it cannot.
    fn write(&mut self, batch: &[u8], lines: usize) {
        match self.sink.as_mut() {
            Some(sink) => {
                if let Err(e) = sink.write_all(batch) {
                    self.failed(&e, lines);
                }
            }
            None => {
                self.metrics.access_log_errors.inc_by(lines as u64);
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
                self.failed(&e, 0);
            }
        }
    }
}

/// Whether the writer sleeps after a pass that took `took` lines: always
/// after an empty pass, and after a busy one (a quarter of `limit` or
/// more) never, so that a burst is not dropped while it sleeps.
fn naps_after(took: usize, limit: usize) -> bool {
    took == 0 || took < limit / 4
}

#[cfg(test)]
mod tests {
    use super::naps_after;

    #[test]
    fn the_writer_naps_after_empty_or_light_passes_only() {
        // Tiny buffers included: an empty pass must never spin.
        for limit in [1, 2, 3, 4, 16_384] {
            assert!(naps_after(0, limit), "limit {limit}");
        }
        assert!(naps_after(1, 16_384));
        assert!(!naps_after(4_096, 16_384));
        assert!(!naps_after(1, 4));
    }
}
