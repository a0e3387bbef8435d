//! Retrying and settling, one branch at a time: a real store (PostgreSQL,
//! then SQLite) wrapped in `FaultyStore`, which makes a chosen append or
//! lookup fail in a chosen way. Each test fails if the branch it names is
//! taken out of the dispatcher. Both concurrency modes append through the
//! same settling code; each test runs both.

use crate::faulty::{Fault, FaultyStore, Op};
use crate::util::*;
use eshost::{
    CommandError, CommandId, Concurrency, Host, HostOptions, RetryPolicy, StoreError, StreamId,
};
use std::sync::Arc;
use std::time::Duration;

const MODES: [Concurrency; 2] = [Concurrency::Queued, Concurrency::Optimistic];

/// Transient errors retried twice per store call, with millisecond waits.
const TRANSIENT_RETRIES: usize = 2;

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_transient_retries: TRANSIENT_RETRIES as u32,
        transient_base_delay: Duration::from_millis(1),
        transient_max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

async fn faulty_host(
    db: &TestDb,
    concurrency: Concurrency,
    retry: RetryPolicy,
) -> (Host, Arc<FaultyStore>) {
    let store = FaultyStore::new(eshost::store::open(&db.url).await.unwrap());
    let options = HostOptions {
        concurrency,
        retry,
        ..HostOptions::default()
    };
    (Host::with_options(modules(), store.clone(), options), store)
}

/// Creates a sale named for the test and mode with `faults` planned for
/// its append and lookups; returns the answer's events, the stream as
/// recorded, and the calls made (appends, lookups).
async fn create_through(
    db: &TestDb,
    name: &str,
    faults: &[(Op, Fault)],
) -> Vec<(Concurrency, Vec<String>, usize, (usize, usize))> {
    let mut runs = Vec::new();
    for mode in MODES {
        let (host, store) = faulty_host(db, mode, quick_retries()).await;
        for (op, fault) in faults {
            store.plan(*op, *fault);
        }
        let id = format!("{name}-{mode:?}");
        let created = host.execute(&create(&id, 5)).await.unwrap();
        assert!(!created.replayed, "{mode:?}: a first answer is no replay");
        let recorded = host
            .store()
            .streams()
            .load(&StreamId::new(FLASH_SALE, &id), 0)
            .await
            .unwrap();
        assert_eq!(
            created.events, recorded,
            "{mode:?}: the answer is what was recorded"
        );
        let calls = (store.calls(Op::Append), store.calls(Op::FindCommands));
        let names = names(&recorded).iter().map(|n| n.to_string()).collect();
        runs.push((mode, names, created.retries as usize, calls));
    }
    runs
}

/// The append committed and its reply was lost: the command ids, looked
/// up, show it committed, and that is the answer. Nothing is sent again.
async fn a_lost_reply_is_settled_by_looking_up_the_command_ids(db: &TestDb) {
    let runs = create_through(db, "lost-reply", &[(Op::Append, Fault::LoseReply)]).await;
    for (mode, recorded, _, calls) in runs {
        assert_eq!(recorded, ["FlashSaleCreated"], "{mode:?}");
        assert_eq!(calls, (1, 1), "{mode:?}: one append, one lookup");
    }
}

/// The connection dropped before the commit: the lookup finds nothing, so
/// the same append is sent again, once.
async fn an_append_lost_before_its_commit_is_looked_up_then_sent_again(db: &TestDb) {
    let runs = create_through(db, "lost", &[(Op::Append, Fault::LoseBeforeCommit)]).await;
    for (mode, recorded, _, calls) in runs {
        assert_eq!(recorded, ["FlashSaleCreated"], "{mode:?}");
        assert_eq!(calls, (2, 1), "{mode:?}: two appends, one lookup");
    }
}

/// No connection could be had: the append never ran, so it is sent again
/// with no lookup.
async fn an_append_never_sent_is_sent_again_without_a_lookup(db: &TestDb) {
    let runs = create_through(db, "not-sent", &[(Op::Append, Fault::NotSent)]).await;
    for (mode, recorded, _, calls) in runs {
        assert_eq!(recorded, ["FlashSaleCreated"], "{mode:?}");
        assert_eq!(calls, (2, 0), "{mode:?}: two appends, no lookup");
    }
}

/// The reply was lost and the first lookup failed too: the lookup is
/// tried again (never the append, whose outcome is still unknown).
async fn a_failed_lookup_is_tried_again_before_anything_is_sent(db: &TestDb) {
    let faults = [
        (Op::Append, Fault::LoseReply),
        (Op::FindCommands, Fault::LoseBeforeCommit),
    ];
    let runs = create_through(db, "lookup-lost", &faults).await;
    for (mode, recorded, _, calls) in runs {
        assert_eq!(recorded, ["FlashSaleCreated"], "{mode:?}");
        assert_eq!(calls, (1, 2), "{mode:?}: one append, two lookups");
    }
}

/// The reply was lost and the lookup ran before the commit landed (it
/// found nothing): the append is sent again and meets its own key. That is
/// looked up too, before anything is decided again, and the answer is the
/// command's events, not a conflict or a refusal ("already exists") for a
/// command that was recorded.
async fn a_resend_that_meets_its_own_key_is_settled_not_decided_again(db: &TestDb) {
    let faults = [
        (Op::Append, Fault::LoseReply),
        (Op::FindCommands, Fault::NotFound),
    ];
    let runs = create_through(db, "own-key", &faults).await;
    for (mode, recorded, retries, calls) in runs {
        assert_eq!(recorded, ["FlashSaleCreated"], "{mode:?}");
        assert_eq!(retries, 0, "{mode:?}: never decided again");
        assert_eq!(calls, (2, 2), "{mode:?}: two appends, two lookups");
    }
}

/// The reply was lost and every lookup fails: the append is never sent
/// again blind. When the retries run out, the answer says the outcome is
/// unknown, though the command was recorded; sent again with the same id,
/// it is answered with what was recorded.
async fn an_outcome_still_unknown_when_retries_run_out_is_answered_unknown(db: &TestDb) {
    for mode in MODES {
        let (host, store) = faulty_host(db, mode, quick_retries()).await;
        store.plan(Op::Append, Fault::LoseReply);
        for _ in 0..=TRANSIENT_RETRIES {
            store.plan(Op::FindCommands, Fault::LoseBeforeCommit);
        }
        let id = format!("unknown-{mode:?}");
        let mut request = create(&id, 5);
        request.command_id = CommandId::chosen(format!("cmd-{id}"));
        let answer = host.execute(&request).await;
        assert!(
            matches!(
                answer,
                Err(CommandError::Store(StoreError::OutcomeUnknown { .. }))
            ),
            "{mode:?}: {answer:?}"
        );
        let calls = (store.calls(Op::Append), store.calls(Op::FindCommands));
        assert_eq!(calls, (1, TRANSIENT_RETRIES + 1), "{mode:?}");
        let again = host.execute(&request).await.unwrap();
        assert!(again.replayed, "{mode:?}");
        assert_eq!(names(&again.events), ["FlashSaleCreated"], "{mode:?}");
    }
}

/// One deadline ends the waiting, however many retries the count allows:
/// lookups that fail forever stop when it passes, and the answer is that
/// the outcome is unknown.
async fn the_deadline_ends_the_waiting_whatever_the_retry_count(db: &TestDb) {
    const MANY: usize = 10_000;
    for mode in MODES {
        let retry = RetryPolicy {
            max_transient_retries: MANY as u32,
            command_deadline: Duration::from_millis(300),
            ..quick_retries()
        };
        let (host, store) = faulty_host(db, mode, retry).await;
        store.plan(Op::Append, Fault::LoseReply);
        for _ in 0..MANY {
            store.plan(Op::FindCommands, Fault::LoseBeforeCommit);
        }
        let answer = host
            .execute(&create(&format!("deadline-{mode:?}"), 5))
            .await;
        assert!(
            matches!(
                answer,
                Err(CommandError::Store(StoreError::OutcomeUnknown { .. }))
            ),
            "{mode:?}: {answer:?}"
        );
        let lookups = store.calls(Op::FindCommands);
        assert!(
            lookups < MANY,
            "{mode:?}: {lookups} lookups; the deadline should have ended them"
        );
    }
}

/// Another writer came first: the command is decided again on the new
/// version and appended, counted as a retry.
async fn a_conflict_is_decided_again_and_counted(db: &TestDb) {
    let runs = create_through(db, "conflict", &[(Op::Append, Fault::Conflict)]).await;
    for (mode, recorded, retries, calls) in runs {
        assert_eq!(recorded, ["FlashSaleCreated"], "{mode:?}");
        assert_eq!(retries, 1, "{mode:?}");
        assert_eq!(calls, (2, 0), "{mode:?}: two appends, no lookup");
    }
}

/// A transaction that failed before it committed is no commit: an append
/// sent twice (never sent, then lost before its commit, then committed)
/// counts one commit, so a commit never holds less than a whole append,
/// however often the store fails. (The bench reports commands per commit
/// beside commands per append; a failed try counted as a commit made the
/// second look larger than the first.)
async fn only_transactions_that_committed_count_as_commits(db: &TestDb) {
    for mode in MODES {
        let (host, store) = faulty_host(db, mode, quick_retries()).await;
        store.plan(Op::Append, Fault::NotSent);
        store.plan(Op::Append, Fault::LoseBeforeCommit);
        host.execute(&create(&format!("commits-{mode:?}"), 5))
            .await
            .unwrap();
        let stats = host.stats();
        assert_eq!(stats.appends.get(), 1, "{mode:?}: one append");
        assert_eq!(
            stats.group_commit.commits.get(),
            1,
            "{mode:?}: one transaction committed"
        );
    }
}

crate::conformance!(
    only_transactions_that_committed_count_as_commits,
    a_lost_reply_is_settled_by_looking_up_the_command_ids,
    an_append_lost_before_its_commit_is_looked_up_then_sent_again,
    an_append_never_sent_is_sent_again_without_a_lookup,
    a_failed_lookup_is_tried_again_before_anything_is_sent,
    a_resend_that_meets_its_own_key_is_settled_not_decided_again,
    an_outcome_still_unknown_when_retries_run_out_is_answered_unknown,
    the_deadline_ends_the_waiting_whatever_the_retry_count,
    a_conflict_is_decided_again_and_counted,
);
