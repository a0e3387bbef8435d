//! What the store keeps for reactors, on both stores: a page of reactions
//! is recorded with the checkpoint, once (a runner that lost the race
//! records nothing); its commands and deliveries wait in the outbox under
//! their ids; timers are scheduled, replaced and cancelled in order, and a
//! timer fires once; refused events are parked; one holder has a lease
//! until it lapses.

use crate::util::*;
use eshost::store::reactions::{
    ActionStatus, Checkpoint, OnFailure, Reaction, ReactionPage, Settlement,
};
use eshost_core::{Action, Delivery, Due, JsonText, ReactionCommand, Scheduled};
use serde_json::json;

fn command(aggregate: &str, id: &str, name: &str) -> ReactionCommand {
    ReactionCommand {
        aggregate: aggregate.into(),
        id: id.into(),
        command: name.into(),
        payload: JsonText::from_value(&json!({"by": "r"})),
        correlation_id: Some("order:o1".into()),
    }
}

fn schedule(key: &str, due: Due) -> Action {
    Action::Schedule(Scheduled {
        key: key.into(),
        due,
        command: command("Order", "o1", "ExpireOrder"),
    })
}

fn reaction(position: i64, outcome: Result<Vec<Action>, String>) -> Reaction {
    Reaction {
        position,
        recorded_at_ms: 100,
        event: format!("Order o1 #{position}"),
        outcome,
    }
}

fn page<'a>(from: i64, to: i64, reactions: &'a [Reaction]) -> ReactionPage<'a> {
    ReactionPage {
        reactor: "r",
        version: "0.1.0",
        digest: "sha256:r1",
        from,
        to,
        reactions,
        now_ms: 1_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_are_recorded_once_with_the_checkpoint_on_both_stores() {
    for db in [TestDb::postgres().await, TestDb::sqlite().await] {
        let store = eshost::store::open(&db.url).await.unwrap();
        let reactions = store.reactions();
        assert_eq!(
            reactions
                .reactor_checkpoint("r", "0.1.0", "sha256:r1", 1)
                .await
                .unwrap(),
            Checkpoint {
                position: 0,
                on_failure: OnFailure::Park,
                stopped_at: None
            }
        );

        let first = [
            reaction(
                3,
                Ok(vec![
                    Action::Send(command("FlashSaleItem", "s1", "PurchaseItem")),
                    schedule("k1", Due::AfterMs(1_000)),
                    Action::Deliver(Delivery {
                        sink: "confirmations".into(),
                        body: JsonText::from_value(&json!({"order": "o1"})),
                    }),
                ]),
            ),
            reaction(4, Err("Order o1 #4: missing field `buyerId`".into())),
            reaction(
                5,
                Ok(vec![
                    schedule("k2", Due::AtMs(50)),
                    Action::Cancel("k1".into()),
                ]),
            ),
        ];
        assert!(
            reactions
                .record_reactions(&page(0, 5, &first))
                .await
                .unwrap()
        );
        assert!(
            !reactions
                .record_reactions(&page(0, 5, &first))
                .await
                .unwrap(),
            "a runner that lost the race records nothing"
        );
        assert_eq!(
            reactions
                .reactor_checkpoint("r", "0.1.0", "sha256:r1", 2)
                .await
                .unwrap()
                .position,
            5
        );

        let pending = reactions.pending_actions("r", 1_000, 10).await.unwrap();
        let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["reaction:r:3:0", "reaction:r:3:2"]);
        assert_eq!(pending[0].action, first[0].outcome.as_ref().unwrap()[0]);
        assert!(
            matches!(&pending[1].action, Action::Deliver(d) if d.body.to_value() == json!({"order": "o1"}))
        );

        let timers = reactions.timers("r").await.unwrap();
        assert_eq!(
            timers.len(),
            1,
            "k1 was cancelled after it was scheduled: {timers:?}"
        );
        assert_eq!((timers[0].key.as_str(), timers[0].due_at_ms), ("k2", 50));

        let parked = reactions.parked_events("r").await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(
            (parked[0].position, parked[0].event.as_str()),
            (4, "Order o1 #4")
        );
        assert!(parked[0].reason.contains("buyerId"));

        // Scheduling a key again replaces its timer; "after" counts from
        // the event's recording.
        let second = [reaction(6, Ok(vec![schedule("k2", Due::AfterMs(10))]))];
        assert!(
            reactions
                .record_reactions(&page(5, 6, &second))
                .await
                .unwrap()
        );
        let timers = reactions.timers("r").await.unwrap();
        assert_eq!(timers.len(), 1);
        assert_eq!(
            (timers[0].id.as_str(), timers[0].due_at_ms),
            ("reaction:r:6:0", 110)
        );

        assert!(reactions.due_timers("r", 109, 10).await.unwrap().is_empty());
        let due = reactions.due_timers("r", 110, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert!(reactions.fire_timer(&due[0]).await.unwrap());
        assert!(
            !reactions.fire_timer(&due[0]).await.unwrap(),
            "a timer fires once"
        );
        assert!(reactions.timers("r").await.unwrap().is_empty());
        let fired = reactions.action("reaction:r:6:0").await.unwrap().unwrap();
        assert_eq!(fired.1, ActionStatus::Pending);
        assert!(matches!(&fired.0.action, Action::Send(c) if c.command == "ExpireOrder"));

        // Settled actions leave the pending list; one to retry comes back
        // when due.
        reactions
            .settle_action("reaction:r:3:0", ActionStatus::Done, "2 events", 0)
            .await
            .unwrap();
        reactions
            .settle_action("reaction:r:3:2", ActionStatus::Pending, "503", 5_000)
            .await
            .unwrap();
        let ids = |pending: Vec<eshost::store::reactions::OutboxEntry>| {
            pending.into_iter().map(|p| p.id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(reactions.pending_actions("r", 4_999, 10).await.unwrap()),
            ["reaction:r:6:0"]
        );
        assert_eq!(
            ids(reactions.pending_actions("r", 5_000, 10).await.unwrap()),
            ["reaction:r:3:2", "reaction:r:6:0"]
        );
        let done = reactions.action("reaction:r:3:0").await.unwrap().unwrap();
        assert_eq!(
            (done.1, done.2.as_deref()),
            (ActionStatus::Done, Some("2 events"))
        );
        let retried = reactions.action("reaction:r:3:2").await.unwrap().unwrap();
        assert_eq!(retried.0.attempts, 1);

        // One holder at a time, until its lease lapses.
        assert!(reactions.take_lease("r", "h1", 1_000, 5_000).await.unwrap());
        assert!(!reactions.take_lease("r", "h2", 2_000, 5_000).await.unwrap());
        assert!(reactions.take_lease("r", "h1", 3_000, 5_000).await.unwrap());
        assert!(!reactions.take_lease("r", "h2", 7_999, 5_000).await.unwrap());
        assert!(reactions.take_lease("r", "h2", 8_001, 5_000).await.unwrap());

        let records = reactions.reactors().await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].position, records[0].digest.as_str()),
            (6, "sha256:r1")
        );

        // A parked event retried: once asked, its reaction is recorded
        // once and it is no longer parked; not asked, nothing happens.
        let fixed = reaction(
            4,
            Ok(vec![Action::Send(command("Order", "o1", "ReserveOrder"))]),
        );
        assert!(!reactions.record_retry("r", &fixed, 9_000).await.unwrap());
        assert_eq!(
            reactions.request_retry("r", Some(99), 9_000).await.unwrap(),
            0
        );
        assert_eq!(reactions.request_retry("r", None, 9_000).await.unwrap(), 1);
        let waiting = reactions.retries_requested("r", 10).await.unwrap();
        assert_eq!(
            (waiting.len(), waiting[0].retry_requested_at_ms),
            (1, Some(9_000))
        );
        let failed_again = reaction(4, Err("still missing `buyerId`".into()));
        assert!(
            reactions
                .record_retry("r", &failed_again, 9_100)
                .await
                .unwrap()
        );
        let parked = reactions.parked_events("r").await.unwrap();
        assert_eq!(
            (parked[0].reason.as_str(), parked[0].retry_requested_at_ms),
            ("still missing `buyerId`", None)
        );
        reactions.request_retry("r", Some(4), 9_200).await.unwrap();
        assert!(reactions.record_retry("r", &fixed, 9_300).await.unwrap());
        assert!(!reactions.record_retry("r", &fixed, 9_400).await.unwrap());
        assert!(reactions.parked_events("r").await.unwrap().is_empty());
        assert!(reactions.action("reaction:r:4:0").await.unwrap().is_some());
        assert_eq!(
            reactions
                .reactor_checkpoint("r", "0.1.0", "sha256:r1", 9_500)
                .await
                .unwrap()
                .position,
            6,
            "a retry never moves the checkpoint back"
        );

        // Under `stop`, a page parked at 8 leaves the checkpoint at 7 and
        // the reactor stopped there until 8 is retried.
        reactions
            .set_on_failure("r", OnFailure::Stop, 10_000)
            .await
            .unwrap();
        let stopped = [reaction(8, Err("refused".into()))];
        assert!(
            reactions
                .record_reactions(&page(6, 7, &stopped))
                .await
                .unwrap()
        );
        assert_eq!(
            reactions
                .reactor_checkpoint("r", "0.1.0", "sha256:r1", 10_001)
                .await
                .unwrap(),
            Checkpoint {
                position: 7,
                on_failure: OnFailure::Stop,
                stopped_at: Some(8)
            }
        );
        reactions.request_retry("r", Some(8), 10_002).await.unwrap();
        assert!(
            reactions
                .record_retry("r", &reaction(8, Ok(vec![])), 10_003)
                .await
                .unwrap()
        );
        let moved = reactions
            .reactor_checkpoint("r", "0.1.0", "sha256:r1", 10_004)
            .await
            .unwrap();
        assert_eq!((moved.position, moved.stopped_at), (8, None));
        assert_eq!(
            reactions.reactors().await.unwrap()[0].on_failure,
            OnFailure::Stop
        );

        // The version that runs is recorded as soon as it runs.
        reactions
            .reactor_checkpoint("r", "0.2.0", "sha256:r2", 11_000)
            .await
            .unwrap();
        let record = &reactions.reactors().await.unwrap()[0];
        assert_eq!(
            (
                record.version.as_str(),
                record.digest.as_str(),
                record.position
            ),
            ("0.2.0", "sha256:r2", 8)
        );
        // An event's many actions come back in the order it gave them
        // (index 10 after index 9, not after 1), and are settled together;
        // a key cancelled, then scheduled again in one page, is scheduled.
        let mut many: Vec<Action> = (0..12)
            .map(|n| Action::Send(command("FlashSaleItem", &format!("s{n}"), "PurchaseItem")))
            .collect();
        many.push(Action::Cancel("k9".into()));
        many.push(schedule("k9", Due::AtMs(9_000)));
        let third = [reaction(9, Ok(many))];
        assert!(
            reactions
                .record_reactions(&page(8, 9, &third))
                .await
                .unwrap()
        );
        let at_seven: Vec<String> = ids(reactions.pending_actions("r", 5_000, 100).await.unwrap())
            .into_iter()
            .filter(|id| id.starts_with("reaction:r:9:"))
            .collect();
        let expected: Vec<String> = (0..12).map(|n| format!("reaction:r:9:{n}")).collect();
        assert_eq!(at_seven, expected);
        let settled: Vec<Settlement> = expected
            .iter()
            .map(|id| Settlement {
                id: id.clone(),
                status: ActionStatus::Done,
                outcome: "1 event(s)".into(),
                retry_at_ms: 0,
            })
            .collect();
        reactions.settle_actions(&settled).await.unwrap();
        let still_pending = ids(reactions.pending_actions("r", 5_000, 100).await.unwrap());
        assert!(
            still_pending
                .iter()
                .all(|id| !id.starts_with("reaction:r:9:")),
            "{still_pending:?}"
        );
        let last = reactions.action("reaction:r:9:11").await.unwrap().unwrap();
        assert_eq!((last.1, last.0.attempts), (ActionStatus::Done, 1));
        let timers = reactions.timers("r").await.unwrap();
        assert_eq!(
            timers.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
            ["k9"]
        );

        db.cleanup().await;
    }
}
