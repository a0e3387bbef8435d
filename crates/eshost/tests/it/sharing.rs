//! Hydrated aggregates share guest instances: up to
//! `aggregates_per_instance` states in one instance, places freed by evicted
//! aggregates reused, and a trap in one aggregate costing its neighbours a
//! rebuild from the store, never a command and never a stale state.

use crate::util::*;
use eshost::wasm::{Budget, Limits, Runtime};
use eshost::{CommandError, CommandRequest, Concurrency, GuestError, Host, HostOptions, Modules};
use std::time::Duration;

const FLASH_SALE: &str = "FlashSaleItem";
const HOSTILE: &str = "Hostile";

/// A host on a SQLite store of its own whose components are loaded with
/// `limits`, from the modules directory plus the given fixtures.
async fn host_with(limits: Limits, fixtures: &[&str], options: HostOptions) -> (Host, TestDb) {
    let runtime = Runtime::with_limits(limits);
    let mut modules = Modules::default();
    modules
        .insert(
            runtime
                .load(&modules_dir().join("flash-sale.wasm"))
                .unwrap(),
        )
        .unwrap();
    for fixture in fixtures {
        let path = build_dir().join("fixtures").join(fixture);
        modules.insert(runtime.load(&path).unwrap()).unwrap();
    }
    let db = TestDb::sqlite().await;
    let store = eshost::store::open(&db.url).await.unwrap();
    (Host::with_options(modules, store, options), db)
}

/// Optimistic, so each aggregate is in the cache as soon as its command is
/// answered (a queue worker holds its own for a while).
fn optimistic() -> HostOptions {
    HostOptions {
        concurrency: Concurrency::Optimistic,
        ..HostOptions::default()
    }
}

fn per_instance(aggregates: usize) -> Limits {
    Limits {
        aggregates_per_instance: aggregates,
        ..Limits::default()
    }
}

#[tokio::test]
async fn aggregates_fill_instances_up_to_the_limit() {
    let (host, _db) = host_with(per_instance(8), &[], optimistic()).await;
    for i in 0..20 {
        host.execute(&create(&format!("item-{i}"), 5))
            .await
            .unwrap();
    }
    assert_eq!(host.cached_aggregates(), 20);
    assert_eq!(host.guest_instances(), 3, "20 aggregates, 8 to an instance");

    let (alone, _db) = host_with(per_instance(1), &[], optimistic()).await;
    for i in 0..20 {
        alone
            .execute(&create(&format!("item-{i}"), 5))
            .await
            .unwrap();
    }
    assert_eq!(alone.guest_instances(), 20, "an instance each");
}

#[tokio::test]
async fn places_of_evicted_aggregates_are_taken_again() {
    let options = HostOptions {
        cache_capacity: 4,
        ..optimistic()
    };
    let (host, _db) = host_with(per_instance(8), &[], options).await;
    for i in 0..100 {
        host.execute(&create(&format!("item-{i}"), 5))
            .await
            .unwrap();
    }
    assert_eq!(host.cached_aggregates(), 4);
    assert_eq!(
        host.guest_instances(),
        1,
        "at most 4 live states at a time fit one instance of 8 places"
    );
    // The evicted ones come back from the store, whole.
    host.execute(&purchase("item-0", "alice", 2)).await.unwrap();
    let state = host.state(FLASH_SALE, "item-0").await.unwrap();
    assert_eq!(state["stock"], 3, "{state}");
}

/// While one aggregate traps again and again, the twenty sharing its
/// instance keep running commands: each trap loses the instance, and each
/// neighbour is rebuilt from the store (in either concurrency mode) with no
/// command failing and no event lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_costs_its_neighbours_a_rebuild_never_a_command() {
    for mode in [Concurrency::Queued, Concurrency::Optimistic] {
        let limits = Limits {
            budget: Budget::WallClock(Duration::from_millis(500)),
            ..per_instance(64)
        };
        let options = HostOptions {
            concurrency: mode,
            ..HostOptions::default()
        };
        let (host, _db) = host_with(limits, &["hostile.wasm"], options).await;
        let ok = |id: &str| CommandRequest::new(HOSTILE, id, "Ok", "{}");
        let neighbours: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
        for id in &neighbours {
            host.execute(&ok(id)).await.unwrap();
        }
        host.execute(&ok("trapper")).await.unwrap();
        let hostile = host.modules().get(HOSTILE).unwrap().clone();
        assert_eq!(
            hostile.instances(),
            (1, 0),
            "{mode:?}: 21 aggregates in one instance"
        );

        let rounds = 5;
        for round in 0..rounds {
            let panic = CommandRequest::new(HOSTILE, "trapper", "Panic", "{}");
            let trap = host.execute(&panic);
            let others = neighbours.iter().map(|id| {
                let host = host.clone();
                let request = ok(id);
                tokio::spawn(async move { host.execute(&request).await })
            });
            let (trapped, answers) = tokio::join!(trap, futures_util::future::join_all(others));
            assert!(
                matches!(
                    trapped,
                    Err(CommandError::Guest(GuestError::Panicked { .. }))
                ),
                "{mode:?} round {round}: {trapped:?}"
            );
            for (id, answer) in neighbours.iter().zip(answers) {
                let answer = answer.unwrap();
                assert!(answer.is_ok(), "{mode:?} round {round}, {id}: {answer:?}");
            }
        }
        assert_eq!(
            hostile.instances().1,
            rounds,
            "{mode:?}: each trap lost one instance"
        );
        for id in &neighbours {
            let state = host.state(HOSTILE, id).await.unwrap();
            assert_eq!(state["done"], 1 + rounds, "{mode:?} {id}: {state}");
        }
    }
}
