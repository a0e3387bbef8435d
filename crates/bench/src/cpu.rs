//! Where a run's CPU time went: the machine's (`/proc/stat`) and the
//! callers' own thread's, read before and after the commands are in
//! flight.

use super::Driver;
use std::time::Duration;

/// Where a run's callers run. Over sockets, on a thread of their own, as a
/// load generator would be a process of its own: the CPU time they take
/// can then be told apart from the server's. In process, on the host's
/// runtime, since they are the host's own callers.
pub(crate) struct ClientThread {
    thread: Option<ClientRuntime>,
}

pub(crate) struct ClientRuntime {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    /// The thread's CPU time when it stops.
    cpu_time: std::thread::JoinHandle<Option<Duration>>,
}

impl ClientThread {
    pub(crate) fn for_driver(driver: &Driver) -> std::io::Result<Self> {
        if matches!(driver, Driver::InProcess(_)) {
            return Ok(Self { thread: None });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let cpu_time = std::thread::Builder::new()
            .name("eshost-bench-callers".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                drop(runtime);
                thread_cpu_time()
            })?;
        Ok(Self {
            thread: Some(ClientRuntime {
                handle,
                stop,
                cpu_time,
            }),
        })
    }

    pub(crate) fn spawn<F>(&self, caller: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.thread {
            Some(thread) => thread.handle.spawn(caller),
            None => tokio::spawn(caller),
        }
    }

    /// Stops the callers' thread (their tasks have ended) and returns the
    /// CPU time it took; `None` in process, or where it cannot be read.
    pub(crate) async fn cpu_time(self) -> Option<Duration> {
        let thread = self.thread?;
        let _ = thread.stop.send(());
        let joined = tokio::task::spawn_blocking(move || thread.cpu_time.join());
        joined.await.ok()?.ok().flatten()
    }
}

/// The calling thread's CPU time, user and system (`/proc/thread-self/stat`,
/// Linux; its clock ticks are 1/100 s on every architecture Linux reports
/// them for).
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The name, in parentheses, may hold spaces; utime and stime are the
    // 12th and 13th fields after it.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// The machine's CPU time counters (`/proc/stat`, Linux).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTimes {
    busy: u64,
    idle: u64,
    cpus: usize,
}

/// What the machine's CPUs did between two [`CpuTimes`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    pub(crate) busy_share: f64,
    pub(crate) cpus: f64,
}

impl CpuTimes {
    pub(crate) async fn now() -> Option<Self> {
        let text = tokio::fs::read_to_string("/proc/stat").await.ok()?;
        let all = text.lines().next()?.strip_prefix("cpu ")?;
        // user nice system idle iowait irq softirq steal ...: time stolen
        // by the hypervisor is neither ours nor idle.
        let ticks: Vec<u64> = all
            .split_whitespace()
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let tick = |n: usize| ticks.get(n).copied().unwrap_or(0);
        let cpus = text
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        Some(Self {
            busy: tick(0) + tick(1) + tick(2) + tick(5) + tick(6),
            idle: tick(3) + tick(4),
            cpus,
        })
    }

    pub(crate) fn since(&self, before: &Self) -> CpuUse {
        let busy = self.busy.saturating_sub(before.busy) as f64;
        let idle = self.idle.saturating_sub(before.idle) as f64;
        CpuUse {
            busy_share: if busy + idle > 0.0 {
                busy / (busy + idle)
            } else {
                0.0
            },
            cpus: self.cpus as f64,
        }
    }
}
