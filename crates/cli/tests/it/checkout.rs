//! The checkout sample: `eshost demo checkout` settles every order on the
//! embedded store, with each confirmation delivered once; at scale, 5,000
//! orders on PostgreSQL do too; the item's release version passes `eshost upgrade check` against streams
//! the reference wrote, and gives the reference scenario's 5/3/0.

use crate::cli::{Workspace, ok};
use crate::util::*;

#[test]
fn demo_checkout_settles_every_order_on_the_embedded_store() {
    let ws = Workspace::with_modules(checkout_dir());
    let reactors = reactors_dir();
    let output = ws.run(&[
        "demo",
        "checkout",
        "--reactors",
        reactors.to_str().unwrap(),
        "--orders",
        "60",
        "--items",
        "3",
        "--stock",
        "15",
        "--unpaid-percent",
        "25",
        "--pay-within-ms",
        "1500",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(ok(output).trim()).unwrap();
    let count = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    // 45 units for 60 orders: 15 rejected; of the 45 reserved, the unpaid
    // ones are cancelled and their units go back on sale.
    assert_eq!(count("orders"), 60, "{report}");
    assert_eq!(count("unsettled"), 0, "{report}");
    assert_eq!(
        count("confirmed") + count("rejected") + count("cancelled"),
        60,
        "{report}"
    );
    assert_eq!(count("rejected"), 15, "{report}");
    assert!(count("cancelled") >= 5, "{report}");
    assert_eq!(count("delivered"), count("confirmed"), "{report}");
    assert!(
        count("deliveries") > count("delivered"),
        "the sink failed some first tries, which were retried: {report}"
    );
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let mut released = 0;
    for item in items {
        let units = |key: &str| item[key].as_u64().unwrap();
        assert_eq!(units("sold"), units("confirmed_units"), "{item}");
        assert_eq!(units("sold") + units("remaining"), 15, "{item}");
        assert_eq!(units("bought"), units("sold") + units("released"), "{item}");
        released += units("released");
    }
    assert_eq!(released, count("cancelled"), "{report}");
}

#[test]
fn the_release_version_passes_the_upgrade_check_and_keeps_the_reference_scenario() {
    let ws = Workspace::with_modules(modules_dir());
    let reference: serde_json::Value =
        serde_json::from_str(ok(ws.run(&["demo", "flash-sale", "--json"])).trim()).unwrap();
    assert_eq!(reference["purchased"], 5, "{reference}");

    let release = checkout_dir().join("flash-sale.wasm");
    let check: serde_json::Value = serde_json::from_str(&ok(ws.run(&[
        "upgrade",
        "check",
        release.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(check["streams_checked"], 1, "{check}");
    assert_eq!(check["failed_count"], 0, "{check}");
    assert_eq!(
        check["changed_count"], 0,
        "the state is the reference's: {check}"
    );

    let checkout = checkout_dir();
    let scenario: serde_json::Value = serde_json::from_str(
        ok(ws.run(&[
            "demo",
            "flash-sale",
            "--json",
            "--modules",
            checkout.to_str().unwrap(),
        ]))
        .trim(),
    )
    .unwrap();
    assert_eq!(
        (
            scenario["purchased"].as_u64(),
            scenario["rejected"].as_u64(),
            scenario["failed"].as_u64()
        ),
        (Some(5), Some(3), Some(0)),
        "{scenario}"
    );
}

/// The checkout at scale on PostgreSQL: 5,000 orders over 20 items of 100
/// units (so 3,000 of them find no stock), a fifth never paid, and a sink
/// that fails the first try of about one delivery in four. Every order
/// settles; every item's units add up and none is oversold; each
/// confirmation is taken by the sink once, by its Idempotency-Key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_orders_settle_on_postgres_and_each_confirmation_arrives_once() {
    use eshost_bench::checkout::{CheckoutOptions, checkout};
    const ORDERS: u64 = 5_000;
    const STOCK: u64 = 100;
    let db = TestDb::postgres().await;
    let host = db.checkout_host().await;
    let reactor = std::sync::Arc::new(
        eshost::wasm::Runtime::new()
            .load_reactor(&reactors_dir().join("checkout.wasm"))
            .unwrap(),
    );
    let options = CheckoutOptions {
        items: 20,
        stock: STOCK,
        orders: ORDERS as u32,
        unpaid_percent: 20,
        // Long enough for a paying buyer to pay while 5,000 orders are
        // worked through at once.
        pay_within: std::time::Duration::from_secs(20),
        deadline: std::time::Duration::from_secs(240),
        place_over: std::time::Duration::ZERO,
    };
    let report = checkout(&host, reactor, &options).await.unwrap();
    let summary = serde_json::to_string(&report).unwrap();
    eprintln!(
        "checkout at scale: confirmed {}, rejected {}, cancelled {}, unsettled {}; \
         {} confirmations delivered in {} tries, {} taken twice; {:.1} s",
        report.confirmed,
        report.rejected,
        report.cancelled,
        report.unsettled,
        report.delivered,
        report.deliveries,
        report.delivered_twice,
        report.seconds
    );
    assert!(report.errors.is_empty(), "{summary}");
    assert_eq!(report.unsettled, 0, "{summary}");
    let settled = report.confirmed + report.rejected + report.cancelled;
    assert_eq!(u64::from(settled), ORDERS, "{summary}");
    // 2,000 units for 5,000 orders: most find none (units an unpaid order
    // gave back can go to a later one).
    assert!(u64::from(report.confirmed) <= 20 * STOCK, "{summary}");
    assert!(report.rejected > report.confirmed, "{summary}");
    assert!(report.cancelled > 0 && report.confirmed > 0, "{summary}");
    assert_eq!(report.delivered, report.confirmed as usize, "{summary}");
    assert_eq!(report.delivered_twice, 0, "{summary}");
    assert!(report.deliveries > report.delivered, "{summary}");
    assert_eq!(report.items.len(), 20);
    let mut released = 0;
    for item in &report.items {
        assert_eq!(item.stock, STOCK, "{item:?}");
        assert!(item.sold <= STOCK, "oversold: {item:?}");
        assert_eq!(item.sold, item.confirmed_units, "{item:?}");
        assert_eq!(item.sold + item.remaining, STOCK, "{item:?}");
        assert_eq!(item.bought, item.sold + item.released, "{item:?}");
        released += item.released;
    }
    // A cancelled order gave back what it had bought (an order whose
    // window closed before the item answered had bought nothing).
    assert!(released <= u64::from(report.cancelled), "{summary}");
    assert!(report.holds(), "{summary}");
    db.cleanup().await;
}
