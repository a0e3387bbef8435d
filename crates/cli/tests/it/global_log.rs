//! The global log: every event once, positions increasing, none skipped,
//! when writers commit out of order; read by `eshost events --all` (a real
//! process, restarted mid-run from its last position).

use crate::util::*;
use eshost::RecordedEvent;
use sqlx::Connection;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const ITEMS_PER_WRITER: usize = 3;
const PURCHASES_PER_ITEM: usize = 12;
/// Events in all: each item's creation and its purchases.
const EVENTS: usize = WRITERS * ITEMS_PER_WRITER * (1 + PURCHASES_PER_ITEM);

/// Makes every append to an item named `late-*` commit 20 ms per event after
/// it took its position, so the appends of the other writers, numbered
/// after it, commit before it: the case a naive reader skips.
async fn commit_late_appends(db: &TestDb) {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION commit_late() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;
         CREATE TRIGGER commit_late AFTER INSERT ON events FOR EACH ROW
         WHEN (NEW.aggregate_id LIKE 'late-%') EXECUTE FUNCTION commit_late();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

/// Eight writers at once, two of them committing late; returns when all
/// their commands are recorded.
async fn write_concurrently(host: Arc<eshost::Host>) {
    // The first two writers' items are the ones whose appends commit late.
    let item = |w: usize, i: usize| match w {
        0 | 1 => format!("late-{w}-{i}"),
        _ => format!("w-{w}-{i}"),
    };
    sell_concurrently(host, WRITERS, ITEMS_PER_WRITER, PURCHASES_PER_ITEM, item).await;
}

/// `eshost events --all --follow` as a child process, its lines collected.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<RecordedEvent>>>,
}

impl Follower {
    fn start(db: &TestDb, from: i64) -> Self {
        Self::with_args(db, &["--from", &from.to_string()])
    }

    /// A follower of the durable subscription `name`.
    fn subscribed(db: &TestDb, name: &str) -> Self {
        Self::with_args(db, &["--subscription", name])
    }

    fn with_args(db: &TestDb, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args(["--database-url", &db.url])
            .args(["events", "--all", "--follow"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event: RecordedEvent = serde_json::from_str(&line).unwrap();
                sink.lock().unwrap().push(event);
            }
        });
        Self { child, lines }
    }

    fn seen(&self) -> Vec<RecordedEvent> {
        self.lines.lock().unwrap().clone()
    }

    /// Kills the follower (SIGKILL) and returns every line it printed.
    async fn kill(mut self) -> Vec<RecordedEvent> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread drains the pipe to its end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.seen()
    }

    /// Waits until the follower printed `count` events (or 60 s passed).
    async fn wait_for(&self, count: usize) -> Vec<RecordedEvent> {
        let started = Instant::now();
        while self.seen().len() < count && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every recorded event exactly once, in increasing position order.
async fn assert_exactly_the_log(db: &TestDb, seen: &[RecordedEvent]) {
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "positions not increasing"
    );
    let keys: HashSet<_> = seen
        .iter()
        .map(|e| (e.aggregate.clone(), e.id.clone(), e.sequence))
        .collect();
    assert_eq!(keys.len(), seen.len(), "an event seen twice");
    let store = eshost::store::open(&db.url).await.unwrap();
    let everything = store.log().read_all(0, None, 1_000_000).await.unwrap();
    assert_eq!(everything.len(), EVENTS);
    assert_eq!(seen.len(), EVENTS, "events skipped");
    assert_eq!(seen, everything.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_sees_every_event_once_in_order_while_commits_come_late() {
    let db = TestDb::postgres().await;
    drop(db.default_host().await); // the schema
    commit_late_appends(&db).await;
    let follower = Follower::start(&db, 0);
    write_concurrently(Arc::new(db.default_host().await)).await;
    let seen = follower.wait_for(EVENTS).await;
    assert_exactly_the_log(&db, &seen).await;
    drop(follower);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_restarted_from_its_last_position_misses_nothing() {
    let db = TestDb::postgres().await;
    drop(db.default_host().await);
    commit_late_appends(&db).await;
    let first = Follower::start(&db, 0);
    let writing = tokio::spawn(write_concurrently(Arc::new(db.default_host().await)));
    // Stopped mid-run, after a third of the events.
    let before = first.wait_for(EVENTS / 3).await;
    drop(first);
    let last = before.last().map_or(0, |e| e.position);
    let second = Follower::start(&db, last);
    writing.await.unwrap();
    let after = second.wait_for(EVENTS - before.len()).await;
    let seen: Vec<_> = before.into_iter().chain(after).collect();
    assert_exactly_the_log(&db, &seen).await;
    drop(second);
    db.cleanup().await;
}

/// A durable subscription (`--subscription billing`) killed with SIGKILL a
/// third of the way in, then started again with the same name and no
/// position: it resumes right after its last saved checkpoint, so between
/// the two runs every event is printed, and only those after that
/// checkpoint twice (at least once). Run once more without --follow, it
/// prints nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_subscription_killed_mid_run_resumes_at_its_checkpoint() {
    const CHECKPOINT: &str = "subscription:billing";
    let db = TestDb::postgres().await;
    drop(db.default_host().await);
    commit_late_appends(&db).await;
    let store = eshost::store::open(&db.url).await.unwrap();
    let first = Follower::subscribed(&db, "billing");
    let writing = tokio::spawn(write_concurrently(Arc::new(db.default_host().await)));
    first.wait_for(EVENTS / 3).await;
    poll("a checkpoint to be saved", async || {
        store
            .checkpoints()
            .load_checkpoint(CHECKPOINT)
            .await
            .unwrap()
            .filter(|p| *p > 0)
    })
    .await;
    let before = first.kill().await;
    let saved = store
        .checkpoints()
        .load_checkpoint(CHECKPOINT)
        .await
        .unwrap()
        .unwrap();
    assert!(
        before.iter().any(|e| e.position == saved),
        "the checkpoint is a printed position"
    );

    let second = Follower::subscribed(&db, "billing");
    writing.await.unwrap();
    let everything = store.log().read_all(0, None, 1_000_000).await.unwrap();
    let after = second
        .wait_for(everything.iter().filter(|e| e.position > saved).count())
        .await;
    assert!(
        after.windows(2).all(|w| w[0].position < w[1].position),
        "positions not increasing"
    );
    let resumed_at = everything.iter().find(|e| e.position > saved).unwrap();
    assert_eq!(
        after[0].position, resumed_at.position,
        "resumed after the checkpoint"
    );
    let mut union: Vec<_> = before
        .into_iter()
        .filter(|e| e.position <= saved)
        .chain(after)
        .collect();
    union.dedup_by_key(|e| e.position);
    assert_eq!(union, everything, "every event, in order");
    tokio::time::sleep(Duration::from_millis(300)).await; // its last flush and save
    second.kill().await;

    let again = Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(["--database-url", &db.url])
        .args(["events", "--all", "--subscription", "billing"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), "", "nothing new");
    db.cleanup().await;
}
