//! A reactor run against a real store and the real flash-sale guest: the
//! checkout reactor's order placed buys the item once, however many passes
//! run; the item's answer, found by its correlation, is reacted to in turn;
//! a command its aggregate refuses is recorded as refused, not retried; a
//! command sent with no correlation id carries the reacted-to event's; a
//! timer fires once when due, and a cancelled one never does; one runner
//! holds the lease. And the supervisor runs what the store has deployed,
//! file or no file.

use eshost::RetryPolicy;
use eshost::store::reactions::ActionStatus;
use eshost::store::{NewCommand, NewEvent, StreamId};
use eshost::wasm::{LoadedReactor, Runtime};
use eshost_react::{Runner, Sinks, Supervisor};
use eshost_read::deployed;
use eshost_test_support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const MINUTE: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_reactor_buys_once_and_its_timer_fires_once() {
    for db in [TestDb::postgres().await, TestDb::sqlite().await] {
        checkout_on(db).await;
    }
}

async fn checkout_on(db: TestDb) {
    let host = db.host(RetryPolicy::default()).await;
    let store = host.store().clone();
    host.execute(&create("s1", 5)).await.unwrap();
    append_order_event(
        &store,
        "o1",
        0,
        "OrderPlaced",
        r#"{"itemId":"s1","buyerId":"ann","quantity":2}"#,
    )
    .await;
    let reactor = Arc::new(
        eshost::wasm::Runtime::new()
            .load_reactor(&reactors_dir().join("checkout.wasm"))
            .unwrap(),
    );
    let now = Arc::new(AtomicI64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    ));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let mut runner = Runner::new(
        (*host).clone(),
        reactor.clone(),
        Sinks::default(),
        "h1".into(),
    )
    .with_clock(clock.clone());

    // The order placed: a purchase recorded, a timer scheduled; the
    // purchase is performed by the next pass, while it reacts to what came
    // after.
    let first = runner.pass().await.unwrap();
    assert!(first.leased);
    assert_eq!(
        (first.reacted, first.parked, first.performed),
        (1, 0, 0),
        "{first:?}"
    );
    // Then the item's purchase, correlated with the order: a ReserveOrder
    // sent to an Order aggregate this host does not have, refused, not
    // retried.
    let rest = until_idle(&mut runner).await;
    assert_eq!((rest.reacted, rest.performed), (1, 2), "{rest:?}");
    let reactions = store.reactions();
    let position_of = async |name: &str| {
        let log = store.log().read_all(0, None, 100).await.unwrap();
        log.iter()
            .find(|e| e.name == name)
            .map(|e| e.position)
            .unwrap()
    };
    let placed_at = position_of("OrderPlaced").await;
    let purchase = reactions
        .action(&eshost_core::action_id("checkout", placed_at, 0))
        .await
        .unwrap()
        .expect("the purchase is in the outbox under its action id");
    assert_eq!(purchase.1, ActionStatus::Done, "{purchase:?}");
    assert_eq!(reactions.timers("checkout").await.unwrap().len(), 1);

    let purchased_at = position_of("ItemPurchased").await;
    let reserve = reactions
        .action(&eshost_core::action_id("checkout", purchased_at, 0))
        .await
        .unwrap()
        .expect("the reservation is in the outbox");
    assert_eq!(reserve.1, ActionStatus::Refused, "{reserve:?}");
    // Correlated with the order all the way: the purchase's event carries
    // the command's correlation id, and the reservation, which names none,
    // inherits it from that event.
    let log = store.log().read_all(0, None, 100).await.unwrap();
    let purchased = log.iter().find(|e| e.name == "ItemPurchased").unwrap();
    assert_eq!(
        purchased.correlation_id(),
        Some("order:o1"),
        "{purchased:?}"
    );
    let eshost_core::Action::Send(reservation) = &reserve.0.action else {
        panic!("{reserve:?}");
    };
    assert_eq!(
        reservation.correlation_id.as_deref(),
        Some("order:o1"),
        "{reservation:?}"
    );
    assert!(
        reserve.2.as_deref().unwrap_or_default().contains("Order"),
        "{reserve:?}"
    );

    // Passes with nothing new do nothing; the item sold 2 once.
    for _ in 0..3 {
        let idle = runner.pass().await.unwrap();
        assert!(!idle.busy(), "{idle:?}");
    }
    let item = host.state("FlashSaleItem", "s1").await.unwrap();
    assert_eq!(item["sold"], 2, "{item}");

    // Another runner finds the lease held.
    let mut other = Runner::new((*host).clone(), reactor, Sinks::default(), "h2".into())
        .with_clock(clock.clone());
    assert!(!other.pass().await.unwrap().leased);

    // A second order, paid: its timer is scheduled, then cancelled.
    append_order_event(
        &store,
        "o2",
        0,
        "OrderPlaced",
        r#"{"itemId":"s1","buyerId":"bob","quantity":1}"#,
    )
    .await;
    until_idle(&mut runner).await;
    let timers = reactions.timers("checkout").await.unwrap();
    let paid_timer = timers
        .iter()
        .find(|t| t.key == "expire:o2")
        .unwrap_or_else(|| panic!("o2's payment timer: {timers:?}"))
        .clone();
    append_order_event(
        &store,
        "o2",
        1,
        "OrderConfirmed",
        r#"{"itemId":"s1","buyerId":"bob","quantity":1}"#,
    )
    .await;
    until_idle(&mut runner).await;
    let timers = reactions.timers("checkout").await.unwrap();
    assert!(timers.iter().all(|t| t.key != "expire:o2"), "{timers:?}");

    // The payment window passes: o1's timer fires once; o2's, cancelled,
    // never does: its command never reaches the outbox.
    now.fetch_add(16 * MINUTE, Ordering::SeqCst);
    let due = until_idle(&mut runner).await;
    assert_eq!((due.fired, due.performed), (1, 1), "{due:?}");
    assert!(reactions.timers("checkout").await.unwrap().is_empty());
    assert!(
        reactions.action(&paid_timer.id).await.unwrap().is_none(),
        "a cancelled timer fired: {paid_timer:?}"
    );
    let again = runner.pass().await.unwrap();
    assert_eq!(again.fired, 0, "{again:?}");
    db.cleanup().await;
}

/// A reactor deployed in the store and in no directory runs under a
/// supervisor of an empty directory; a version deployed while it runs
/// takes over, from the same checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_runs_what_the_store_deployed_with_no_file() {
    // SQLite: on PostgreSQL its transactions would hold back the global
    // log's safe horizon for the test beside it, which counts passes.
    let db = TestDb::sqlite().await;
    let host = db.host(RetryPolicy::default()).await;
    let store = host.store().clone();
    host.execute(&create("s1", 5)).await.unwrap();
    let runtime = Runtime::new();
    let deploy = async |file: std::path::PathBuf| {
        let bytes = std::fs::read(file).unwrap();
        deployed::deploy::<LoadedReactor>(&*store, &runtime, "checkout", bytes, None)
            .await
            .unwrap()
            .component
            .digest
            .clone()
    };
    let first = deploy(reactors_dir().join("checkout.wasm")).await;
    let empty = tempfile::tempdir().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let supervisor = Supervisor::new(
        (*host).clone(),
        runtime.clone(),
        empty.path().into(),
        Vec::new(),
        Sinks::default(),
        "h1".into(),
    );
    let running = tokio::spawn(supervisor.run(Vec::new(), true, stop.clone()));

    append_order_event(
        &store,
        "o1",
        0,
        "OrderPlaced",
        r#"{"itemId":"s1","buyerId":"ann","quantity":2}"#,
    )
    .await;
    let registered = async |digest: &str| {
        for _ in 0..150 {
            let records = store.reactions().reactors().await.unwrap();
            if records
                .iter()
                .any(|r| r.name == "checkout" && r.digest == digest)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("checkout {digest} never ran");
    };
    registered(&first).await;
    let item = StreamId::new("FlashSaleItem", "s1");
    for _ in 0..150 {
        let events = store.streams().load(&item, 0).await.unwrap();
        if events.iter().any(|e| e.name == "ItemPurchased") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let events = store.streams().load(&item, 0).await.unwrap();
    assert!(
        events.iter().any(|e| e.name == "ItemPurchased"),
        "the deployed reactor never bought the order's item: {events:?}"
    );

    let second = deploy(reactor_fixture("checkout-strict.wasm")).await;
    assert_ne!(first, second);
    registered(&second).await;

    stop.cancel();
    let outcomes = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the supervisor stops when told")
        .unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    db.cleanup().await;
}

/// Appends an event to an order's stream at `version`, as the Order
/// aggregate (which this host does not load) would record it.
async fn append_order_event(
    store: &Arc<dyn eshost::store::EventStore>,
    order: &str,
    version: u64,
    name: &str,
    payload: &str,
) {
    let command = NewCommand {
        command_id: format!("{name}-{order}"),
        name: name.into(),
        fingerprint: name.into(),
        events: vec![NewEvent {
            name: name.into(),
            payload: payload.into(),
            metadata: "{}".into(),
            subject: None,
        }],
    };
    store
        .streams()
        .append(&StreamId::new("Order", order), version, &[command])
        .await
        .unwrap();
}

/// Runs passes until one does nothing; what they did, summed.
async fn until_idle(runner: &mut Runner) -> eshost_react::Pass {
    let mut total = eshost_react::Pass::default();
    for _ in 0..20 {
        let pass = runner.pass().await.unwrap();
        if !pass.busy() {
            return total;
        }
        total.reacted += pass.reacted;
        total.parked += pass.parked;
        total.retried += pass.retried;
        total.fired += pass.fired;
        total.performed += pass.performed;
    }
    panic!("a runner still busy after 20 passes: {total:?}");
}
