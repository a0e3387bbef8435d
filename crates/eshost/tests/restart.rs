//! PostgreSQL restarted in the middle of a hot-item run. A test binary of its
//! own: cargo runs test binaries one after another, so no other test is
//! connected while the server goes down.
//!
//! The server is restarted with `pg_ctlcluster -m fast VERSION main restart`
//! (the newest cluster under /etc/postgresql, as `.ci/run` starts it), or with
//! the shell command in `ESHOST_RESTART_COMMAND` when the database is
//! elsewhere. `ESHOST_RESTART_COMMAND=skip` skips it, saying so: only for a
//! database this user cannot restart.

use eshost::Concurrency;
use eshost_test_support::*;
use sqlx::Connection;
use std::process::Command;
use std::time::{Duration, Instant};

fn restart_command() -> Command {
    if let Ok(command) = std::env::var("ESHOST_RESTART_COMMAND") {
        let mut shell = Command::new("sh");
        shell.args(["-c", &command]);
        return shell;
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("no /etc/postgresql: set ESHOST_RESTART_COMMAND to restart the test database")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("no cluster under /etc/postgresql");
    let mut pg_ctl = Command::new("pg_ctlcluster");
    pg_ctl.args([
        "--skip-systemctl-redirect",
        "-m",
        "fast",
        &version,
        "main",
        "restart",
    ]);
    pg_ctl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_mid_run_loses_and_doubles_nothing() {
    let command = std::env::var("ESHOST_RESTART_COMMAND");
    if command.as_deref() == Ok("skip") {
        eprintln!("SKIPPED: ESHOST_RESTART_COMMAND=skip");
        return;
    }
    let db = TestDb::postgres().await;
    let hosts = patient_hosts(&db.url, &[Concurrency::Queued, Concurrency::Optimistic]).await;
    hosts[0].execute(&create("hot", 200)).await.unwrap();

    let started_at = || async {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let at: String = sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        at
    };
    let before = started_at().await;

    // About 2.5 s of paced purchases; the restart starts 0.3 s in.
    let run = async {
        let answers = paced_purchases(&hosts, "hot", 300, 12, Duration::from_millis(100)).await;
        (answers, Instant::now())
    };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = tokio::task::spawn_blocking(|| restart_command().status())
            .await
            .unwrap()
            .expect("running the restart command");
        assert!(status.success(), "restarting PostgreSQL failed: {status}");
        Instant::now()
    };
    let ((answers, run_ended), restarted) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(run, restart)
    })
    .await
    .expect("the run ended in bounded time");
    // The proof the fault happened mid-run: a new server, up again before
    // the run's last command.
    assert_ne!(started_at().await, before, "the server did not restart");
    assert!(restarted < run_ended, "the restart ended after the run");
    let transient: u64 = hosts
        .iter()
        .map(|h| h.stats().transient_retries.get())
        .sum();
    // Often 0: the pool checks a connection before handing it out and waits
    // for the server to come back, so commands wait rather than fail.
    eprintln!("{transient} store calls retried across the restart");
    assert_each_recorded_once(&hosts[0], "hot", 200, &answers).await;
    db.cleanup().await;
}
