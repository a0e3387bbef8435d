//! `eshost projection run` as a real process: killed mid-run and run again,
//! its view counts every event once.

use crate::util::*;

crate::conformance!(a_runner_killed_mid_run_loses_and_repeats_nothing);

/// `eshost projection run` killed with SIGKILL at its first commit while
/// writers sell, then run again to catch up: the view counts every purchase exactly once (the
/// commit that the kill cut off never happened; the one before it stays).
async fn a_runner_killed_mid_run_loses_and_repeats_nothing(db: &TestDb) {
    const WRITERS: usize = 8;
    const ITEMS: usize = 3;
    const PURCHASES: usize = 30;
    let store = eshost::store::open(&db.url).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let eshost = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"));
        command
            .args(["--database-url", &db.url])
            .args(args)
            .env("ESHOST_PROJECTIONS", projections_dir())
            .env("ESHOST_CACHE_DIR", cache.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let mut runner = eshost(&["projection", "run", "--no-watch"])
        .spawn()
        .unwrap();
    poll("the runner to start", async || {
        store.views().projections().await.unwrap().pop()
    })
    .await;
    let host = db.host(eshost::RetryPolicy::default()).await;
    let item = |w: usize, i: usize| format!("killed-{w}-{i}");
    let selling = tokio::spawn(sell_concurrently(host, WRITERS, ITEMS, PURCHASES, item));
    let killed_at = poll("the runner to commit", async || {
        let record = store.views().projections().await.unwrap().pop()?;
        (record.position > 0).then_some(record.position)
    })
    .await;
    runner.kill().unwrap();
    runner.wait().unwrap();
    selling.await.unwrap();
    assert!(
        killed_at < head(&*store).await,
        "the runner was killed after the last event"
    );

    let caught_up = eshost(&["projection", "run", "--once"]).status().unwrap();
    assert!(caught_up.success(), "{caught_up}");
    assert_view(
        &documents(&*store).await,
        &expected_view(WRITERS, ITEMS, PURCHASES as u64, item),
    );
}
