//! Database faults during a hot-item run, against the real PostgreSQL, each
//! bounded in time: backends terminated mid-run, and a pool with no free
//! connection. (A restart of the server is `tests/restart.rs`: it would
//! disturb the tests running beside these.) Afterwards every command was
//! answered once, as recorded, nothing oversold, the stream gapless.

use crate::util::*;
use eshost::{Concurrency, Host};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

/// Fails the test rather than hang it.
const BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_backends_mid_run_lose_and_double_nothing() {
    let db = TestDb::postgres().await;
    let app = format!("eshost-fault-{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}&application_name={app}", db.url);
    let hosts = patient_hosts(
        &url,
        &[
            Concurrency::Queued,
            Concurrency::Optimistic,
            Concurrency::Queued,
        ],
    )
    .await;
    hosts[0].execute(&create("hot", 300)).await.unwrap();

    let run = paced_purchases(&hosts, "hot", 400, 24, Duration::from_millis(3));
    let killer = async {
        let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut killed = 0i64;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&app)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            killed += n;
        }
        killed
    };
    let (answers, killed) = tokio::time::timeout(BOUND, async { tokio::join!(run, killer) })
        .await
        .expect("the run ended in bounded time");
    assert!(
        killed > 0,
        "no backend was terminated: the test proved nothing"
    );
    let transient: u64 = hosts
        .iter()
        .map(|h| h.stats().transient_retries.get())
        .sum();
    eprintln!("terminated {killed} backends; {transient} store calls retried");
    assert!(transient > 0, "no command met a terminated backend");
    assert_each_recorded_once(&hosts[0], "hot", 300, &answers).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_delays_but_loses_nothing() {
    let db = TestDb::postgres().await;
    let store = eshost::store::PostgresStore::connect(&db.url)
        .await
        .unwrap();
    let host = Arc::new(Host::with_options(
        modules(),
        Arc::new(store.clone()),
        patient(Concurrency::Queued),
    ));
    host.execute(&create("hot", 100)).await.unwrap();
    // Every connection the pool may open, held by someone else for a while.
    let mut held = Vec::new();
    for _ in 0..store.pool().options().get_max_connections() {
        held.push(store.pool().acquire().await.unwrap());
    }
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(held);
    };
    let run = paced_purchases(std::slice::from_ref(&host), "hot", 150, 16, Duration::ZERO);
    let (answers, ()) = tokio::time::timeout(BOUND, async { tokio::join!(run, release) })
        .await
        .expect("the run ended in bounded time");
    assert_each_recorded_once(&host, "hot", 100, &answers).await;
    db.cleanup().await;
}
