//! Where guest calls run, so that none holds an async worker thread.
//!
//! A guest call is synchronous and may burn its whole budget (a second by
//! default). Held on a tokio worker for that long, it would stall every
//! other aggregate, every database reply and every timer sharing that
//! worker; on a 2-core machine the runtime has two. Yet almost every call
//! takes microseconds, and handing each one to another thread and back
//! costs more than the call (two cross-CPU wake-ups).
//!
//! So every call waits (asynchronously) for one of a bounded number of
//! permits, then:
//!
//! - [`GuestPool::run_here`], on a multi-threaded runtime, with a
//!   wall-clock budget, runs the call where it is, on the worker. A call
//!   still running at the next epoch tick (at most
//!   [`EPOCH_TICK`](super::sandbox::EPOCH_TICK)) calls
//!   [`leave_async_worker`] from the sandbox's tick callback: tokio's
//!   `block_in_place` hands the worker's queue and its other tasks to a new
//!   thread, and the call goes on alone on this one, as a blocking thread.
//!   A slow guest holds a worker for one tick, rarely a few. A call that
//!   must wait for a lock another thread holds leaves the worker the same
//!   way before it waits;
//! - otherwise (a current-thread runtime, or a fuel budget, which has no
//!   ticks), and always with [`GuestPool::run`] (starting an instance: host
//!   work no tick interrupts), the call runs on tokio's blocking threads.
//!
//! Either way a slow or hostile guest holds at most its own permit, for at
//! most its own budget. Decision record 0015 (`docs/adr/`) has the figures.

use super::Budget;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Guest calls that may run at once when no size is given.
pub const DEFAULT_THREADS: usize = 16;

/// How long a call leaving its worker waits for another thread to take
/// the worker over (a thread is started or woken for it). Paid once per
/// call that outlives a tick, which is already a slow call.
const HANDOVER: Duration = Duration::from_millis(1);

/// Times one call tries to leave its worker: a try fails only if no thread
/// took the worker over during [`HANDOVER`].
const LEAVE_TRIES: u8 = 3;

thread_local! {
    /// While a call made with [`GuestPool::run_here`] runs on this thread,
    /// the tries it has left to leave the worker; 0 for any other code.
    static LEAVE_TRIES_LEFT: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Guest calls at once, bounded, run where they cost least. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GuestPool {
    permits: Arc<Semaphore>,
    threads: usize,
}

/// The closure given to [`GuestPool::run`] panicked: a bug in the host (a
/// guest's own failures are traps, returned as values). Whatever it held
/// is gone.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the host panicked during a guest call: {0}")]
pub struct PoolPanic(pub String);

impl Default for GuestPool {
    fn default() -> Self {
        Self::new(DEFAULT_THREADS)
    }
}

impl GuestPool {
    /// A pool running at most `threads` guest calls at once (at least one).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            permits: Arc::new(Semaphore::new(threads)),
            threads,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Guest calls running now.
    pub fn busy(&self) -> usize {
        self.threads - self.permits.available_permits()
    }

    /// Runs `call` on a blocking thread once a permit is free; returns its
    /// result and how long it ran (not counting the wait for a permit).
    /// For calls that may wait on a lock or do host work that no epoch
    /// tick interrupts, such as starting an instance.
    pub async fn run<T, F>(&self, call: F) -> Result<(T, Duration), PoolPanic>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let timed = self.timed(call).await;
        tokio::task::spawn_blocking(timed)
            .await
            .map_err(|e| match e.try_into_panic() {
                Ok(panic) => PoolPanic::from_payload(panic),
                Err(e) => PoolPanic(e.to_string()),
            })
    }

    /// As [`run`](Self::run), but a call into a guest whose calls run
    /// under a wall-clock `budget` runs where it is made when that is a
    /// multi-threaded runtime's worker: its ticks move it off the worker
    /// if it runs long (see the module docs).
    pub async fn run_here<T, F>(&self, budget: Budget, call: F) -> Result<(T, Duration), PoolPanic>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // Only a wall-clock budget ticks.
        if !matches!(budget, Budget::WallClock(_)) || !on_multi_thread_runtime() {
            return self.run(call).await;
        }
        let timed = self.timed(call).await;
        LEAVE_TRIES_LEFT.set(LEAVE_TRIES);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(timed));
        LEAVE_TRIES_LEFT.set(0);
        ran.map_err(PoolPanic::from_payload)
    }

    /// `call` timed, holding a permit (waited for here) until it returns.
    async fn timed<T, F>(&self, call: F) -> impl FnOnce() -> (T, Duration) + use<T, F>
    where
        F: FnOnce() -> T,
    {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.permits.clone().acquire_owned().await;
        move || {
            let _permit = permit;
            let started = Instant::now();
            let result = call();
            (result, started.elapsed())
        }
    }
}

impl PoolPanic {
    fn from_payload(panic: Box<dyn std::any::Any + Send>) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Self(message)
    }
}

fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Called by a guest call still running at an epoch tick, or about to wait
/// for its instance's lock: if [`GuestPool::run_here`] ran it on a
/// multi-threaded runtime's worker, the worker's other tasks move to a new
/// thread and this one is left to the call. Elsewhere (a blocking thread)
/// it does nothing.
pub(crate) fn leave_async_worker() {
    let tries = LEAVE_TRIES_LEFT.get();
    if tries == 0 {
        return;
    }
    // Once the worker is left, the later tries only cost their pause: a
    // call past its first tick is slow already.
    LEAVE_TRIES_LEFT.set(tries - 1);
    // The pause lets the new thread take the worker over before
    // `block_in_place` returns; if none has, tokio takes the worker back
    // and the next tick tries again.
    tokio::task::block_in_place(|| std::thread::sleep(HANDOVER));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A task counting 5 ms sleeps on the current runtime: it counts only
    /// while some worker is free to run it.
    fn ticker() -> (tokio::task::JoinHandle<()>, Arc<AtomicU32>) {
        let ticks = Arc::new(AtomicU32::new(0));
        let counter = ticks.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        (task, ticks)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_call_leaves_the_async_thread_free() {
        // One async thread: if the pool ran calls on it, the ticker below
        // could not tick while the call sleeps.
        let pool = GuestPool::new(2);
        let (ticker, ticks) = ticker();
        let (value, ran) = pool
            .run(|| {
                std::thread::sleep(Duration::from_millis(200));
                7
            })
            .await
            .unwrap();
        ticker.abort();
        assert_eq!(value, 7);
        assert!(ran >= Duration::from_millis(200));
        assert!(ticks.load(Ordering::Relaxed) >= 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_wall_clock_call_runs_on_its_worker_until_it_leaves_it() {
        // Spawned, so the body runs on the runtime's one worker.
        let body = tokio::spawn(async {
            let pool = GuestPool::new(2);
            let wall_clock = Budget::WallClock(Duration::from_secs(1));
            let here = std::thread::current().id();
            let (there, _) = pool
                .run_here(wall_clock, || std::thread::current().id())
                .await
                .unwrap();
            assert_eq!(there, here, "a wall-clock call runs where it is made");
            let (there, _) = pool
                .run_here(Budget::Fuel(1), || std::thread::current().id())
                .await
                .unwrap();
            assert_ne!(there, here, "a fuel call runs on a blocking thread");

            // A call that leaves its worker, as the sandbox's tick callback
            // makes a long one do, lets the worker's other tasks go on.
            let (ticker, ticks) = ticker();
            tokio::task::yield_now().await;
            pool.run_here(wall_clock, || {
                leave_async_worker();
                std::thread::sleep(Duration::from_millis(200));
            })
            .await
            .unwrap();
            ticker.abort();
            // Off a `run_here` call, leaving is nothing: no pause either.
            let started = Instant::now();
            for _ in 0..100 {
                leave_async_worker();
            }
            assert!(started.elapsed() < HANDOVER * 10);
            ticks.load(Ordering::Relaxed)
        });
        let ticks = body.await.unwrap();
        assert!(ticks >= 10, "the runtime stood still: {ticks} ticks");
    }

    #[tokio::test]
    async fn at_most_threads_calls_run_at_once_and_a_panic_is_an_error() {
        let pool = GuestPool::new(2);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        let panicked = pool.run(|| panic!("on purpose")).await;
        assert_eq!(panicked.unwrap_err().0, "on purpose");
        assert_eq!(pool.busy(), 0, "the permit came back after the panic");
    }
}
