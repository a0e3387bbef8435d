//! The relay to NATS JetStream, against the real server (ESHOST_TEST_NATS,
//! else nats://127.0.0.1:4222): killed and restarted while writers append,
//! it puts every event in the stream exactly once, in order.

use crate::util::*;
use async_nats::jetstream;
use eshost::{Host, RecordedEvent};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const ITEMS_PER_WRITER: usize = 2;
const PURCHASES_PER_ITEM: usize = 10;
const EVENTS: u64 = (WRITERS * ITEMS_PER_WRITER * (1 + PURCHASES_PER_ITEM)) as u64;

pub(crate) fn nats_url() -> String {
    std::env::var("ESHOST_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `eshost relay` as a child process; killed (SIGKILL) when dropped.
pub(crate) struct RelayProcess(Child);

impl RelayProcess {
    pub(crate) fn start(db: &TestDb, stream: &str, prefix: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args(["--database-url", &db.url])
            .args(["relay", "--nats", &nats_url()])
            .args(["--stream", stream, "--subject-prefix", prefix])
            .args(["--name", stream])
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn write_concurrently(host: Arc<Host>) {
    // A dot in every id: the subject must escape it.
    let item = |w: usize, i: usize| format!("relay-{w}.{i}");
    sell_concurrently(host, WRITERS, ITEMS_PER_WRITER, PURCHASES_PER_ITEM, item).await;
}

/// Waits until the stream holds at least `count` messages (60 s at most);
/// returns how many it holds.
async fn wait_for_messages(js: &jetstream::Context, stream: &str, count: u64) -> u64 {
    let started = Instant::now();
    loop {
        let held = match js.get_stream(stream).await {
            Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        };
        if held >= count || started.elapsed() > Duration::from_secs(60) {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_killed_and_restarted_mid_run_publishes_every_event_once_in_order() {
    let db = TestDb::postgres().await;
    let host = Arc::new(db.default_host().await);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ESHOST_TEST_{run}"), format!("test.{run}"));
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());

    // A duplicate window far shorter than the outage below: ids alone would
    // not keep a resent event out, only the expected last id does.
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.>")],
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = RelayProcess::start(&db, &stream, &prefix);
    let writing = tokio::spawn(write_concurrently(host.clone()));
    // Killed a third of the way in, while the writers go on.
    wait_for_messages(&js, &stream, EVENTS / 3).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = RelayProcess::start(&db, &stream, &prefix);
    writing.await.unwrap();
    assert_eq!(wait_for_messages(&js, &stream, EVENTS).await, EVENTS);
    // A little longer: a duplicate would arrive now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(second);

    let relayed = js.get_stream(&stream).await.unwrap();
    let mut published = Vec::new();
    for sequence in 1..=EVENTS {
        let message = relayed.get_raw_message(sequence).await.unwrap();
        let event: RecordedEvent = serde_json::from_slice(&message.payload).unwrap();
        let id = message.headers.get("Nats-Msg-Id").unwrap().as_str();
        assert_eq!(id, event.position.to_string());
        let item = event.id.replace('.', "%2E");
        assert_eq!(
            message.subject.as_str(),
            format!("{prefix}.FlashSaleItem.{item}")
        );
        published.push(event);
    }
    let recorded = host.read_all(0, None, 10 * EVENTS).await.unwrap();
    assert_eq!(recorded.len() as u64, EVENTS);
    assert_eq!(published, recorded, "every event once, in position order");
    assert_eq!(
        js.get_stream(&stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        EVENTS
    );
    let checkpoint = format!("relay:{stream}");
    assert_eq!(
        host.store()
            .checkpoints()
            .load_checkpoint(&checkpoint)
            .await
            .unwrap(),
        recorded.last().map(|e| e.position)
    );
    js.delete_stream(&stream).await.unwrap();
    db.cleanup().await;
}
