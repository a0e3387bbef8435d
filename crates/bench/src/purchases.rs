//! The purchases every throughput scenario runs: sales created, then one
//! unit bought at a time from many callers at once, through the host, one
//! `eshost serve` or a cluster behind HAProxy, timed with the CPU it took.

use crate::cpu::{ClientThread, CpuTimes};
use crate::{AGGREGATE, BenchError, BenchLine, http};
use eshost::dispatch::{CommandRequest, Host};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// How a benchmark sends its commands.
#[derive(Clone)]
pub(crate) enum Driver {
    InProcess(Host),
    /// `eshost serve` at this address.
    Http(std::net::SocketAddr),
    /// HAProxy in front of several hosts, at this address.
    Cluster(std::net::SocketAddr),
}

/// Who buys: a new buyer for every purchase, or these many buyers, each
/// buying again and again (purchase `n` is buyer `n % count`'s).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Buyers {
    EveryPurchaseNew,
    Returning(usize),
}

impl Buyers {
    /// The buyer of purchase `n`.
    pub(crate) fn of(self, n: usize) -> String {
        match self {
            Self::EveryPurchaseNew => format!("b{n}"),
            Self::Returning(count) => format!("b{}", n % count.max(1)),
        }
    }
}

/// One caller's way to send: the host itself, or its own connection.
enum Caller {
    InProcess(Host),
    Http(http::Connection),
    Resending(http::Resending),
}

impl Driver {
    /// A caller, connected (HTTP) before the clock starts.
    async fn caller(&self) -> Result<Caller, BenchError> {
        Ok(match self {
            Self::InProcess(host) => Caller::InProcess(host.clone()),
            Self::Http(server) => Caller::Http(http::Connection::open(*server).await?),
            Self::Cluster(proxy) => Caller::Resending(http::Resending::connect(*proxy).await?),
        })
    }
}

impl Caller {
    /// Takes purchase numbers from `next` until `purchases` are taken, and
    /// sends each (one unit, to the sales in `ids` round-robin, by the
    /// purchase's buyer): the latency of each in ms, the conflict retries,
    /// the failures, the resends (`None` for a caller that does not resend).
    async fn purchase(
        &mut self,
        ids: &[String],
        next: &AtomicUsize,
        purchases: usize,
        buyers: Buyers,
    ) -> (Vec<f64>, u64, usize, Option<u64>) {
        let mut latencies = Vec::new();
        let (mut retries, mut failed) = (0u64, 0usize);
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= purchases {
                break;
            }
            let payload = serde_json::json!({ "buyerId": buyers.of(n), "quantity": 1 }).to_string();
            let id = &ids[n % ids.len()];
            let request = CommandRequest::new(AGGREGATE, id, "PurchaseItem", payload);
            let sent = Instant::now();
            match self.execute(&request).await {
                Ok(retried) => retries += u64::from(retried),
                Err(error) => {
                    failed += 1;
                    tracing::warn!(%error, "a benchmark command failed");
                }
            }
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        let resends = match self {
            Self::Resending(caller) => Some(caller.resends),
            _ => None,
        };
        (latencies, retries, failed, resends)
    }

    /// Sends one command; the conflict retries it took, or why it failed.
    async fn execute(&mut self, request: &CommandRequest) -> Result<u32, String> {
        match self {
            Self::InProcess(host) => host
                .execute(request)
                .await
                .map(|o| o.retries)
                .map_err(|e| e.to_string()),
            Self::Http(connection) => connection.execute(request).await,
            Self::Resending(caller) => caller.execute(request).await.map(|a| a.retries),
        }
    }
}

/// True if any of the sales sold more than its `stock`.
async fn any_oversold(host: &Host, ids: &[String], stock: u64) -> Result<bool, BenchError> {
    let mut oversold = false;
    for id in ids {
        let state = host.state(AGGREGATE, id).await?;
        let sold = state["sold"].as_u64().unwrap_or(u64::MAX);
        oversold |= sold > stock || state["stock"].as_u64().is_none();
    }
    Ok(oversold)
}

/// Creates `sales` sales of `stock`, then `purchases` purchases of one unit
/// spread over them round-robin, from `callers` concurrent callers sending
/// through `driver`, each by a new buyer.
pub(crate) async fn purchases_run(
    host: &Host,
    driver: &Driver,
    sales: usize,
    stock: u64,
    purchases: usize,
    callers: usize,
) -> Result<BenchLine, BenchError> {
    purchases_by(
        host,
        driver,
        (sales, stock, purchases, callers),
        Buyers::EveryPurchaseNew,
    )
    .await
}

/// [`purchases_run`] with these buyers.
pub(crate) async fn purchases_by(
    host: &Host,
    driver: &Driver,
    (sales, stock, purchases, callers): (usize, u64, usize, usize),
    buyers: Buyers,
) -> Result<BenchLine, BenchError> {
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let ids: Arc<Vec<String>> =
        Arc::new((0..sales).map(|n| format!("bench-{prefix}-{n}")).collect());
    for id in ids.iter() {
        let payload = serde_json::json!({ "initialStock": stock }).to_string();
        host.execute(&CommandRequest::new(
            AGGREGATE,
            id,
            "CreateFlashSale",
            payload,
        ))
        .await?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    // Every caller connects first (HTTP), then all start together.
    let start = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let client = ClientThread::for_driver(driver)?;
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (driver, ids, next, start) =
                (driver.clone(), ids.clone(), next.clone(), start.clone());
            client.spawn(async move {
                let caller = driver.caller().await;
                start.wait().await;
                Ok::<_, BenchError>(caller?.purchase(&ids, &next, purchases, buyers).await)
            })
        })
        .collect();
    // Counted before the callers are let go: read after, an append that
    // began first would be missing from the appends and present in the
    // commits (a commit seemed to hold less than an append).
    let appends_before = host.stats().appends.get();
    let commits_before = host.stats().group_commit.commits.get();
    let cpu_before = CpuTimes::now().await;
    start.wait().await;
    let started = Instant::now();
    let (mut latencies, mut retries, mut failed) = (Vec::new(), 0u64, 0usize);
    let mut resends: Option<u64> = None;
    for worker in workers {
        let (l, r, f, sent_again) = worker.await??;
        latencies.extend(l);
        retries += r;
        failed += f;
        if let Some(n) = sent_again {
            *resends.get_or_insert(0) += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuTimes::now()
        .await
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    let appends = host.stats().appends.get() - appends_before;
    let commits = host.stats().group_commit.commits.get() - commits_before;

    let oversold = any_oversold(host, &ids, stock).await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(BenchLine {
        retries_per_command: retries as f64 / purchases as f64,
        commands_per_append: purchases as f64 / appends.max(1) as f64,
        commands_per_commit: purchases as f64 / commits.max(1) as f64,
        failed,
        oversold,
        cpu_us_per_command: cpu.map(|c| c.busy_share * c.cpus * seconds * 1e6 / purchases as f64),
        cpu_busy_share: cpu.map(|c| c.busy_share),
        client_cpu_us_per_command: client
            .cpu_time()
            .await
            .map(|time| time.as_secs_f64() * 1e6 / purchases as f64),
        resends,
        ..BenchLine::timed("", "", purchases, seconds, &latencies)
    })
}
