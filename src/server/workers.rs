//! Worker threads: one single-threaded event loop per core, like nginx
//! workers. Each worker accepts on its own `SO_REUSEPORT` socket and keeps its
//! own upstream connections, so a request never crosses threads.

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::watch;

use crate::upstream::pool::set_worker_index;

/// How many tasks a worker runs between two looks at its sockets while it
/// has work queued (tokio's `event_interval`, 61 by default). Each look
/// ends a batch: the responses and upstream requests written in it wake
/// the peers that read them (clients, upstreams), and a peer woken for a
/// small batch sleeps again sooner. At 256, measured with `bench/run.sh`'s
/// load on one core, the wake-ups the gateway causes per request halved
/// (0.15 to 0.08, `perf stat -e sched:sched_wakeup`) and CPU per request
/// fell about 2.7% (5 alternating rounds: 12.79 -> 12.50, 13.24 -> 12.72,
/// 13.34 -> 13.13, 13.17 -> 12.97, 13.43 -> 12.92 µs); 128 to 1,024 were
/// alike. A worker with nothing queued still looks at once, so an idle
/// gateway's latency does not change.
const EVENT_INTERVAL: u32 = 256;

/// The running worker threads.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// How many workers `requested` means: 0 is one per available core.
pub fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// Starts `n` worker threads and waits until each runs its event loop.
    pub fn spawn(n: usize) -> io::Result<Workers> {
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = Builder::new_current_thread()
                .event_interval(EVENT_INTERVAL)
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let mut stop_rx = stop.subscribe();
            let t = std::thread::Builder::new()
                .name(format!("portcullis-w{i}"))
                .spawn(move || {
                    set_worker_index(i);
                    rt.block_on(async move {
                        // Runs until told to stop, or until the gateway is gone.
                        while !*stop_rx.borrow_and_update() {
                            if stop_rx.changed().await.is_err() {
                                break;
                            }
                        }
                    });
                })?;
            threads.push(t);
        }
        Ok(Workers {
            handles,
            stop,
            threads,
        })
    }

    /// The workers' runtime handles, for spawning accept loops on each.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True when there are no workers.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Stops every event loop (dropping whatever still runs on it) and
    /// returns the threads, for the caller to join outside any lock: a
    /// worker that is still finishing a task may need one (an Admin API
    /// call takes the gateway's control lock), and joining while holding it
    /// would wait forever.
    pub fn stop(&mut self) -> Vec<JoinHandle<()>> {
        let _ = self.stop.send(true);
        std::mem::take(&mut self.threads)
    }
}

/// Waits for stopped worker threads to end; returns how many panicked.
pub fn join(threads: Vec<JoinHandle<()>>) -> usize {
    threads
        .into_iter()
        .map(JoinHandle::join)
        .filter(Result::is_err)
        .count()
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
