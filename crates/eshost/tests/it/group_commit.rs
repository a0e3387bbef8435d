//! Group commit: several streams' appends in one transaction, each with
//! its own outcome. On the store (a stream that meets a key is undone
//! alone), through the committer (groups form while the committers are
//! busy, bounded in bytes, taken apart when refused as a whole), and
//! through the host.

use crate::faulty::{Fault, FaultyStore, Op};
use crate::util::*;
use eshost::group_commit::{GroupCommit, GroupLimits};
use eshost::store::{NewCommand, NewEvent, StreamAppend};
use eshost::{Host, HostOptions, StoreError, StreamId};
use std::sync::Arc;
use std::time::Duration;

fn command(id: &str, events: usize) -> NewCommand {
    NewCommand {
        command_id: id.into(),
        name: "Import".into(),
        fingerprint: format!("fingerprint of {id}"),
        events: (0..events)
            .map(|n| NewEvent {
                name: "StockAdded".into(),
                payload: format!(r#"{{"n":{n}}}"#),
                metadata: "{}".into(),
                subject: None,
            })
            .collect(),
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new(FLASH_SALE, id)
}

/// Four streams in one group: one fresh, one whose sequence number is
/// taken, one whose command id is recorded, one more fresh. The two that
/// meet a key fail alone and leave nothing behind; the others commit.
async fn a_stream_that_meets_a_key_is_undone_alone(db: &TestDb) {
    let store = eshost::store::open(&db.url).await.unwrap();
    let (fresh, taken, repeat, other) = (
        stream("group-fresh"),
        stream("group-taken"),
        stream("group-repeat"),
        stream("group-other"),
    );
    store
        .streams()
        .append(&taken, 0, &[command("taken-first", 1)])
        .await
        .unwrap();
    store
        .streams()
        .append(&repeat, 0, &[command("repeat-first", 1)])
        .await
        .unwrap();

    let fresh_commands = [command("fresh-1", 2), command("fresh-2", 1)];
    let taken_commands = [command("taken-second", 2)];
    let repeat_commands = [command("repeat-new", 1), command("repeat-first", 1)];
    let other_commands = [command("other-1", 1)];
    let group = [
        StreamAppend {
            stream: &fresh,
            expected_version: 0,
            commands: &fresh_commands,
        },
        StreamAppend {
            stream: &taken,
            expected_version: 0,
            commands: &taken_commands,
        },
        StreamAppend {
            stream: &repeat,
            expected_version: 1,
            commands: &repeat_commands,
        },
        StreamAppend {
            stream: &other,
            expected_version: 0,
            commands: &other_commands,
        },
    ];
    let outcomes = store.streams().append_group(&group).await.unwrap();
    assert_eq!(outcomes.len(), 4);

    let fresh_events = outcomes[0].as_ref().unwrap();
    let sequences: Vec<u64> = fresh_events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert!(
        matches!(
            outcomes[1],
            Err(StoreError::Conflict {
                expected_version: 0,
                ..
            })
        ),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2], Err(StoreError::DuplicateCommand { .. })),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(outcomes[3].as_ref().unwrap().len(), 1);

    // What was answered is what is stored, and nothing of the failed two.
    assert_eq!(
        &store.streams().load(&fresh, 0).await.unwrap(),
        fresh_events
    );
    assert_eq!(store.streams().load(&taken, 0).await.unwrap().len(), 1);
    assert_eq!(store.streams().load(&repeat, 0).await.unwrap().len(), 1);
    assert_eq!(store.streams().load(&other, 0).await.unwrap().len(), 1);
    let found = store
        .streams()
        .find_commands(&[
            "fresh-1",
            "fresh-2",
            "other-1",
            "taken-second",
            "repeat-new",
        ])
        .await
        .unwrap();
    let mut found: Vec<&str> = found.iter().map(|c| c.command_id.as_str()).collect();
    found.sort();
    assert_eq!(found, ["fresh-1", "fresh-2", "other-1"]);
    let repeat_first = store
        .streams()
        .find_commands(&["repeat-first"])
        .await
        .unwrap();
    assert_eq!(
        repeat_first[0].stream, repeat,
        "the recorded command is untouched"
    );

    // The global log holds the six events once each. (It shows nothing
    // past a transaction still running anywhere, so wait for other tests'.)
    let mut all = Vec::new();
    for _ in 0..200 {
        all = store.log().read_all(0, None, 100).await.unwrap();
        if all.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut keys: Vec<(String, u64)> = all.iter().map(|e| (e.id.clone(), e.sequence)).collect();
    keys.sort();
    let expected: Vec<(String, u64)> = [
        ("group-fresh", 1),
        ("group-fresh", 2),
        ("group-fresh", 3),
        ("group-other", 1),
        ("group-repeat", 1),
        ("group-taken", 1),
    ]
    .into_iter()
    .map(|(id, sequence)| (id.to_string(), sequence))
    .collect();
    assert_eq!(keys, expected);
}

/// A committer with one task whose first append hangs: every append sent
/// meanwhile waits, and they go together once it is done.
async fn held_up(db: &TestDb, limits: GroupLimits) -> (Arc<FaultyStore>, Arc<GroupCommit>) {
    let store = FaultyStore::new(eshost::store::open(&db.url).await.unwrap());
    let commits = Arc::new(GroupCommit::new(store.clone(), limits));
    store.plan(Op::Append, Fault::Hang(Duration::from_millis(300)));
    let first = commits.clone();
    tokio::spawn(async move {
        let commands: Arc<[NewCommand]> = vec![command("held-up", 1)].into();
        first
            .append(&stream("held-up"), 0, commands, deadline(), Vec::new())
            .await
            .unwrap();
    });
    // The hanging append is taken before the others are sent.
    while store.calls(Op::Append) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (store, commits)
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

/// Sends one append per stream `{prefix}-{n}` with `sizes[n]` events, in
/// that order a few milliseconds apart, without waiting for outcomes; the
/// outcomes in stream order.
async fn append_all(
    commits: &Arc<GroupCommit>,
    prefix: &str,
    sizes: &[usize],
) -> Vec<Result<usize, StoreError>> {
    let mut sending = tokio::task::JoinSet::new();
    for (n, &events) in sizes.iter().enumerate() {
        let commits = commits.clone();
        let id = format!("{prefix}-{n}");
        sending.spawn(async move {
            let commands: Arc<[NewCommand]> = vec![command(&id, events)].into();
            let outcome = commits
                .append(&stream(&id), 0, commands, deadline(), Vec::new())
                .await;
            (n, outcome.map(|events| events.len()))
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut outcomes = sending.join_all().await;
    outcomes.sort_by_key(|(n, _)| *n);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

fn one_committer() -> GroupLimits {
    GroupLimits {
        committers: 1,
        ..GroupLimits::default()
    }
}

/// Eight appends that wait for a busy committer go as one group.
async fn appends_waiting_for_a_committer_go_as_one_group(db: &TestDb) {
    let (store, commits) = held_up(db, one_committer()).await;
    let outcomes = append_all(&commits, "waiting", &[1; 8]).await;
    assert!(outcomes.iter().all(|o| matches!(o, Ok(1))), "{outcomes:?}");
    assert_eq!(
        store.calls(Op::Append),
        2,
        "the held-up append, then one group"
    );
}

/// A group refused as a whole (not a key, not transient) is taken apart:
/// each append is sent alone, and only the one the database refuses again
/// fails.
async fn a_group_refused_as_a_whole_is_sent_again_one_by_one(db: &TestDb) {
    let (store, commits) = held_up(db, one_committer()).await;
    store.plan(Op::Append, Fault::Refused);
    store.plan(Op::Append, Fault::Refused);
    let outcomes = append_all(&commits, "refused", &[1; 4]).await;
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::Database { .. })))
        .count();
    let recorded = outcomes.iter().filter(|o| matches!(o, Ok(1))).count();
    assert_eq!((refused, recorded), (1, 3), "{outcomes:?}");
    assert_eq!(
        store.calls(Op::Append),
        1 + 1 + 4,
        "the held-up append, the group, then each alone"
    );
}

/// A group stops short of its byte bound; an append over the bound by
/// itself still goes, alone.
async fn a_group_is_bounded_in_bytes(db: &TestDb) {
    let one_event = command("bytes-0", 1).bytes();
    let limits = GroupLimits {
        max_bytes: 2 * one_event + 10,
        ..one_committer()
    };
    let (store, commits) = held_up(db, limits).await;
    let outcomes = append_all(&commits, "bytes", &[1, 1, 1, 1, 5]).await;
    let counts: Vec<usize> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(counts, [1, 1, 1, 1, 5]);
    // The held-up append; then two groups of two small appends, and the
    // large one alone.
    assert_eq!(store.calls(Op::Append), 1 + 3);
}

/// What a group append answers is what the store then holds, field for
/// field: positions, times, payloads and metadata (the store answers from
/// what it sent, not from rows read back).
async fn a_group_answers_exactly_what_it_recorded(db: &TestDb) {
    let store = eshost::store::open(&db.url).await.unwrap();
    let (left, right) = (stream("answered-left"), stream("answered-right"));
    let mut with_metadata = command("answered-2", 2);
    for event in &mut with_metadata.events {
        event.metadata = r#"{"commandId":"answered-2","note":"kept as written"}"#.into();
    }
    let (left_commands, right_commands) = (
        [command("answered-1", 1), with_metadata],
        [command("answered-3", 3)],
    );
    let outcomes = store
        .streams()
        .append_group(&[
            StreamAppend {
                stream: &left,
                expected_version: 0,
                commands: &left_commands,
            },
            StreamAppend {
                stream: &right,
                expected_version: 0,
                commands: &right_commands,
            },
        ])
        .await
        .unwrap();
    let answered: Vec<Vec<_>> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(answered[0], store.streams().load(&left, 0).await.unwrap());
    assert_eq!(answered[1], store.streams().load(&right, 0).await.unwrap());
    assert_eq!(answered[0].len(), 3);
    assert_eq!(
        answered[0][2].metadata["note"], "kept as written",
        "{:?}",
        answered[0][2]
    );
    // Streams go in in key order, each stream's events in sequence order:
    // one ascending run of positions.
    let positions: Vec<i64> = answered.iter().flatten().map(|e| e.position).collect();
    assert!(positions.is_sorted(), "{positions:?}");
}

/// Through the host: 200 items created at once share transactions, and
/// every answer is what was recorded.
async fn commands_on_many_aggregates_share_commits(db: &TestDb) {
    let store = FaultyStore::new(eshost::store::open(&db.url).await.unwrap());
    store.plan(Op::Append, Fault::Hang(Duration::from_millis(200)));
    let host = Host::with_options(modules(), store.clone(), HostOptions::default());
    const ITEMS: usize = 200;
    let mut creating = tokio::task::JoinSet::new();
    for n in 0..ITEMS {
        let host = host.clone();
        creating.spawn(async move { host.execute(&create(&format!("shared-{n}"), 3)).await });
    }
    for answer in creating.join_all().await {
        let outcome = answer.unwrap();
        assert_eq!(names(&outcome.events), ["FlashSaleCreated"]);
    }
    let appends = store.calls(Op::Append);
    assert!(
        appends <= ITEMS / 4,
        "{appends} transactions for {ITEMS} commands on as many aggregates"
    );
    for n in [0, ITEMS / 2, ITEMS - 1] {
        let events = host
            .events(FLASH_SALE, &format!("shared-{n}"))
            .await
            .unwrap();
        assert_eq!(names(&events), ["FlashSaleCreated"]);
    }
}

crate::conformance!(
    a_stream_that_meets_a_key_is_undone_alone,
    appends_waiting_for_a_committer_go_as_one_group,
    a_group_refused_as_a_whole_is_sent_again_one_by_one,
    a_group_is_bounded_in_bytes,
    a_group_answers_exactly_what_it_recorded,
    commands_on_many_aggregates_share_commits,
);
