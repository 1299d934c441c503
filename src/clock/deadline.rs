//! Timeouts for waits that almost never run out, like an upstream's answer:
//! [`timeout`] is `tokio::time::timeout` without a timer per wait.
//!
//! A tokio timeout puts an entry in the runtime's timer wheel when it first
//! waits and takes it out when it is dropped, about 660 instructions per
//! proxied request (measured with callgrind), for a timer that almost never
//! fires. Here a wait instead notes its deadline and waker in a table of its
//! worker thread, and one task per table, the sweeper, keeps a single tokio
//! timer set to the earliest deadline in the table. nginx keeps its timers
//! the same lazy way: the sweeper's timer is moved only when a wait with an
//! earlier deadline arrives, which a fixed timeout never does (each new
//! deadline is later than those already waiting); when it fires, it wakes
//! the waits that ran out and sets itself to the next deadline. Per wait,
//! the cost is a clock reading and two short table updates.
//!
//! A timeout fires at its deadline, rounded up to the next millisecond like
//! tokio's, and never before it: a wait checks the clock itself before it
//! reports one.
//!
//! [`Wait`] is the same deadline for code that polls by hand, like a body
//! whose chunks must keep coming (the body guards' idle and total limits).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::Tick;

/// The error of a wait that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline has elapsed")]
pub struct Elapsed;

/// Runs `future` for at most `limit`: its output, or [`Elapsed`].
pub fn timeout<F: Future>(limit: Duration, future: F) -> Timeout<F> {
    // Built here rather than through `timeout_at`: the extra call made
    // LLVM copy the future once more (measured, about 140 instructions
    // per proxied request).
    Timeout {
        inner: future,
        wait: Wait::until(Tick::now() + limit),
    }
}

/// Runs `future` until `deadline`: its output, or [`Elapsed`].
pub fn timeout_at<F: Future>(deadline: Tick, future: F) -> Timeout<F> {
    Timeout {
        inner: future,
        wait: Wait::until(deadline),
    }
}

/// A deadline to wait for from a hand-written `poll` (see the module
/// docs): noted in the worker's table the first time it is polled, taken
/// out when dropped. To move it, replace it with a new one.
#[derive(Debug)]
pub struct Wait {
    deadline: Tick,
    entry: Option<(&'static Table, usize)>,
}

impl Wait {
    /// A wait until `deadline`; nothing is noted until it is polled.
    pub fn until(deadline: Tick) -> Wait {
        Wait {
            deadline,
            entry: None,
        }
    }

    /// Ready once the deadline has passed; until then, `cx`'s task is
    /// woken when it does.
    pub fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Tick::now() >= self.deadline {
            return Poll::Ready(());
        }
        self.note(cx);
        Poll::Pending
    }

    /// Keeps `cx`'s waker to be woken at the deadline: noted in the
    /// worker's table the first time, kept in its place after that.
    fn note(&mut self, cx: &mut Context<'_>) {
        match self.entry {
            None => self.entry = Some(Table::local().add(self.deadline, cx.waker())),
            Some((table, i)) => table.lock().rewake(i, cx.waker()),
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some((table, i)) = self.entry.take() {
            table.lock().remove(i);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future with a deadline (see [`timeout`]).
    pub struct Timeout<F> {
        #[pin]
        inner: F,
        wait: Wait,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let wait = this.wait;
        if wait.entry.is_none() {
            // The first wait: its deadline was set a moment ago, so the
            // clock is not read again.
            wait.note(cx);
        } else if wait.poll_elapsed(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

/// One worker thread's waits, shared with its sweeper (and with any thread
/// a wait moves to, on a multi-threaded runtime).
#[derive(Debug, Default)]
struct Table(Mutex<Waits>);

#[derive(Debug, Default)]
struct Waits {
    /// Deadlines and wakers; `None` marks a free place (listed in `free`).
    /// A wait that ran out keeps its place, without a waker, until dropped.
    slots: Vec<Option<(Tick, Option<Waker>)>>,
    free: Vec<usize>,
    /// What the sweeper's timer is set to, while it runs one.
    armed: Option<Tick>,
    /// The sweeper, while it is parked.
    sweeper: Option<Waker>,
    /// Set when a wait needs the sweeper to look again (the first wait, or
    /// one with a deadline before `armed`).
    kick: bool,
    /// Whether a sweeper task runs for this table.
    running: bool,
}

thread_local! {
    static LOCAL: Cell<Option<&'static Table>> = const { Cell::new(None) };
}

impl Table {
    /// This thread's table. Made once per thread and kept for the life of
    /// the process (a few dozen bytes per worker), so that a wait can hold
    /// it without a reference count.
    fn local() -> &'static Table {
        LOCAL.with(|t| match t.get() {
            Some(table) => table,
            None => {
                let table: &'static Table = Box::leak(Box::default());
                t.set(Some(table));
                table
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waits> {
        // The table stays consistent at every step: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a wait; starts the sweeper if none runs, and moves its timer
    /// if this deadline comes first.
    fn add(&'static self, deadline: Tick, waker: &Waker) -> (&'static Table, usize) {
        let mut w = self.lock();
        let entry = Some((deadline, Some(waker.clone())));
        let i = match w.free.pop() {
            Some(i) => {
                w.slots[i] = entry;
                i
            }
            None => {
                w.slots.push(entry);
                w.slots.len() - 1
            }
        };
        if !w.running {
            w.running = true;
            drop(w);
            tokio::spawn(sweep(self, Stopped(self)));
        } else if w.armed.is_none_or(|at| deadline < at) {
            // Noted as armed so that the waits after it do not ask again
            // before the sweeper has looked.
            w.armed = Some(deadline);
            w.kick = true;
            if let Some(s) = w.sweeper.take() {
                drop(w);
                s.wake();
            }
        }
        (self, i)
    }
}

impl Waits {
    /// Keeps `waker` for wait `i` when it is not the one kept already.
    fn rewake(&mut self, i: usize, waker: &Waker) {
        if let Some((_, Some(w))) = &mut self.slots[i] {
            if !w.will_wake(waker) {
                w.clone_from(waker);
            }
        }
    }

    fn remove(&mut self, i: usize) {
        if self.slots[i].take().is_some() {
            self.free.push(i);
        }
    }

    /// Wakes the waits whose deadline has passed (once each) and returns
    /// the earliest deadline still waiting.
    fn expire(&mut self, now: Tick) -> Option<Tick> {
        let mut next: Option<Tick> = None;
        for (deadline, waker) in self.slots.iter_mut().flatten() {
            if *deadline <= now {
                if let Some(w) = waker.take() {
                    w.wake();
                }
            } else if waker.is_some() && next.is_none_or(|n| *deadline < n) {
                next = Some(*deadline);
            }
        }
        next
    }
}

/// Marks the table's sweeper as gone when its task ends (its runtime shut
/// down), so that the next wait starts another. Given to the task as an
/// argument, so that it also runs for a task dropped before its first poll.
struct Stopped(&'static Table);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut w = self.0.lock();
        w.running = false;
        w.armed = None;
        w.sweeper = None;
    }
}

/// The sweeper of `table`: wakes its waits as they run out.
async fn sweep(table: &'static Table, _stopped: Stopped) {
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    loop {
        let next = {
            let mut w = table.lock();
            w.kick = false;
            let next = w.expire(Tick::now());
            w.armed = next;
            next
        };
        if let Some(at) = next {
            // Tick and tokio's Instant read the same clock. A deadline
            // days away (a timeout configured in years) is looked at again
            // after a day rather than overflowing tokio's Instant.
            let wait = at.since(Tick::now()).min(Duration::from_secs(86_400));
            sleep.as_mut().reset(tokio::time::Instant::now() + wait);
        }
        // Until the timer fires (when it is set) or a wait asks for an
        // earlier one (or, with none set, for any): checked and parked
        // under one lock, so no request is missed.
        std::future::poll_fn(|cx| {
            if next.is_some() && sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut w = table.lock();
            if w.kick {
                return Poll::Ready(());
            }
            w.sweeper = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
