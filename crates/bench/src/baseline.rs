//! The database's own limit, measured in the same run as the host: a plain
//! single-row INSERT-and-commit loop at the same concurrency.

use super::BenchError;
use eshost_store as store;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The single-row INSERT-and-commit rate from `callers` concurrent callers
/// (at most 64 on PostgreSQL, 8 on SQLite: a database does not take a
/// thousand connections) over `duration`: what the database itself can
/// commit.
pub(crate) async fn baseline_inserts(
    url: &str,
    callers: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    if url.starts_with("sqlite:") {
        // The same connection settings as the store, for a fair comparison.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(callers.min(8) as u32)
            .connect_with(store::SqliteStore::connect_options(url)?)
            .await?;
        let id = "id INTEGER PRIMARY KEY AUTOINCREMENT";
        baseline_on(pool, id, callers, duration).await
    } else {
        // The store's own settings; PostgreSQL refuses more than about 100
        // connections, so at most 64.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(callers.min(64) as u32)
            .connect_with(store::PostgresStore::connect_options(url)?)
            .await?;
        baseline_on(pool, "id BIGSERIAL PRIMARY KEY", callers, duration).await
    }
}

/// The insert loop on one pool, in a scratch table whose key column is
/// `id_column` (each database spells an auto-increment key its own way).
async fn baseline_on<DB: sqlx::Database>(
    pool: sqlx::Pool<DB>,
    id_column: &str,
    callers: usize,
    duration: Duration,
) -> Result<f64, BenchError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let create = format!(
        "CREATE TABLE IF NOT EXISTS eshost_bench_baseline ({id_column}, payload TEXT NOT NULL)"
    );
    sqlx::query(&create).execute(&pool).await?;
    let inserter = pool.clone();
    let rate = insert_loop(callers, duration, move || {
        let pool = inserter.clone();
        async move {
            sqlx::query("INSERT INTO eshost_bench_baseline (payload) VALUES ('{}')")
                .execute(&pool)
                .await
                .is_ok()
        }
    })
    .await?;
    sqlx::query("DROP TABLE eshost_bench_baseline")
        .execute(&pool)
        .await?;
    Ok(rate)
}

/// Runs `insert` from `callers` tasks until `duration` is up; successes per second.
async fn insert_loop<F, Fut>(
    callers: usize,
    duration: Duration,
    insert: F,
) -> Result<f64, BenchError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (insert, count) = (insert.clone(), count.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if insert().await {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
