use std::future::{pending, Future};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use super::{timeout, timeout_at, Elapsed, Table, Wait};
use crate::clock::Tick;

/// A runtime of its own, for the tests that drop one on this thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// How many waits the thread's table holds.
fn waiting() -> usize {
    Table::local().lock().slots.iter().flatten().count()
}

#[tokio::test]
async fn a_wait_that_finishes_in_time_gives_its_output() {
    assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
    let slow = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        "late but in time"
    };
    assert_eq!(
        timeout(Duration::from_secs(1), slow).await,
        Ok("late but in time")
    );
    assert_eq!(waiting(), 0, "finished waits leave the table");
}

#[tokio::test]
async fn a_timeout_fires_at_its_deadline_and_not_before() {
    let start = Instant::now();
    let r = timeout(Duration::from_millis(60), pending::<()>()).await;
    let took = start.elapsed();
    assert_eq!(r, Err(Elapsed));
    assert!(took >= Duration::from_millis(60), "{took:?}");
    assert!(took < Duration::from_millis(400), "{took:?}");
    assert_eq!(waiting(), 0);
}

#[tokio::test]
async fn an_earlier_deadline_arriving_later_is_not_held_up() {
    // The sweeper's timer is set for the long wait first.
    let long = tokio::spawn(timeout(Duration::from_secs(30), pending::<()>()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    assert_eq!(
        timeout(Duration::from_millis(50), pending::<()>()).await,
        Err(Elapsed)
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_millis(400),
        "{took:?}"
    );
    assert_eq!(waiting(), 1, "the long wait is still there");
    long.abort();
    let _ = long.await;
    assert_eq!(waiting(), 0, "an aborted wait leaves the table");
}

#[tokio::test]
async fn many_waits_each_end_once_and_free_their_place() {
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        tasks.push(tokio::spawn(async move {
            // Even ones finish in time, odd ones never do.
            let work = async move {
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else {
                    pending::<()>().await;
                }
            };
            timeout(Duration::from_millis(40 + i % 7), work).await
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("task");
        assert_eq!(r.is_ok(), i % 2 == 0, "wait {i}: {r:?}");
        ok += usize::from(r.is_ok());
    }
    assert_eq!(ok, 100);
    assert_eq!(waiting(), 0);
    // Places are reused, not grown per wait.
    assert!(Table::local().lock().slots.len() <= 200);
    assert_eq!(timeout(Duration::from_secs(1), async { 1 }).await, Ok(1));
    assert!(Table::local().lock().slots.len() <= 200);
}

#[tokio::test]
async fn a_wait_dropped_after_waiting_leaves_the_table() {
    let mut wait = Box::pin(timeout(Duration::from_millis(30), pending::<()>()));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    assert_eq!(waiting(), 1);
    drop(wait);
    assert_eq!(waiting(), 0);
    // The sweeper, set for the dropped wait, finds nothing and goes idle;
    // a later wait still gets its timeout.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        timeout(Duration::from_millis(20), pending::<()>()).await,
        Err(Elapsed)
    );
}

#[test]
fn a_new_runtime_on_the_same_thread_gets_a_new_sweeper() {
    for _ in 0..2 {
        let rt = runtime();
        rt.block_on(async {
            let r = timeout(Duration::from_millis(20), pending::<()>()).await;
            assert_eq!(r, Err(Elapsed));
        });
        drop(rt);
        assert!(
            !Table::local().lock().running,
            "the sweeper ended with its runtime"
        );
    }
}

#[test]
fn a_sweeper_dropped_before_it_ran_is_replaced() {
    let rt = runtime();
    rt.block_on(async {
        // Registers (and spawns the sweeper), then ends before the
        // sweeper's task is first polled.
        let mut wait = Box::pin(timeout(Duration::from_secs(60), pending::<()>()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(Table::local().lock().running);
    });
    drop(rt);
    assert!(
        !Table::local().lock().running,
        "an unpolled sweeper counts as gone"
    );
    let rt = runtime();
    rt.block_on(async {
        let r = timeout(Duration::from_millis(20), pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
    });
}

#[tokio::test]
async fn a_timeout_of_years_waits_without_overflow() {
    let years = Duration::from_secs(200 * 365 * 86_400);
    assert_eq!(timeout(years, async { 3 }).await, Ok(3));
    let never = tokio::spawn(timeout(years, pending::<()>()));
    // The sweeper sets its timer for this wait, capped, and keeps running.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!never.is_finished());
    assert_eq!(
        timeout(Duration::from_millis(20), pending::<()>()).await,
        Err(Elapsed)
    );
    never.abort();
}

#[tokio::test]
async fn a_hand_polled_wait_is_ready_at_its_deadline_and_leaves_when_dropped() {
    let start = Instant::now();
    let mut wait = Wait::until(Tick::now() + Duration::from_millis(60));
    // Not noted anywhere until polled.
    assert_eq!(waiting(), 0);
    std::future::poll_fn(|cx| wait.poll_elapsed(cx)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(60), "{took:?}");
    assert!(took < Duration::from_millis(400), "{took:?}");
    // Polled again after its deadline, it stays ready without waiting.
    let mut cx = Context::from_waker(Waker::noop());
    assert!(wait.poll_elapsed(&mut cx).is_ready());
    assert_eq!(waiting(), 1, "kept until dropped");
    drop(wait);
    assert_eq!(waiting(), 0);

    // A wait replaced before its deadline (a body that made progress)
    // leaves the table, and the new one alone is noted.
    let mut first = Wait::until(Tick::now() + Duration::from_secs(30));
    assert!(first.poll_elapsed(&mut cx).is_pending());
    assert_eq!(waiting(), 1);
    first = Wait::until(Tick::now() + Duration::from_millis(30));
    assert_eq!(waiting(), 0, "the replaced wait left");
    let start = Instant::now();
    std::future::poll_fn(|cx| first.poll_elapsed(cx)).await;
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[tokio::test]
async fn a_deadline_already_past_times_out_at_once() {
    let start = Instant::now();
    let r = timeout_at(Tick::now(), pending::<()>()).await;
    assert_eq!(r, Err(Elapsed));
    assert!(start.elapsed() < Duration::from_millis(400));
    let mut wait = Wait::until(Tick::now());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        wait.poll_elapsed(&mut cx).is_ready(),
        "no table entry needed"
    );
    assert_eq!(waiting(), 0);
}
