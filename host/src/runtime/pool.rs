//! Where guest calls run: never on an async worker thread.
//!
//! A guest call is synchronous and may burn its whole budget (a second by
//! default). Run on a tokio worker, it would stall every other aggregate,
//! every database reply and every timer sharing that worker; on a 2-core
//! machine the runtime has two. So every call into a guest goes through
//! [`GuestPool::run`]: it waits (asynchronously) for one of a bounded number
//! of permits, then runs on tokio's blocking threads. A slow or hostile guest
//! can then hold at most its own permit, for at most its own budget; healthy
//! aggregates keep the other permits and the async runtime keeps running.
//!
//! Each hop costs a thread hand-off (microseconds), so callers batch: a queue
//! worker decides a whole batch in one call. docs/decisions.md has the
//! figures and why this was chosen over wasmtime's async support.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Guest calls that may run at once when no size is given.
pub const DEFAULT_THREADS: usize = 16;

/// A bounded set of threads for guest calls. Cheap to clone.
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
    pub async fn run<T, F>(&self, call: F) -> Result<(T, Duration), PoolPanic>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.permits.clone().acquire_owned().await;
        let ran = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let result = call();
            (result, started.elapsed())
        })
        .await;
        ran.map_err(|e| {
            let message = match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into()),
                Err(e) => e.to_string(),
            };
            PoolPanic(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_call_leaves_the_async_thread_free() {
        // One async thread: if the pool ran calls on it, the ticker below
        // could not tick while the call sleeps.
        let pool = GuestPool::new(2);
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
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
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) >= 10);
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
                        let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
        let panicked = pool.run(|| panic!("on purpose")).await;
        assert_eq!(panicked.unwrap_err().0, "on purpose");
        assert_eq!(pool.busy(), 0, "the permit came back after the panic");
    }
}
