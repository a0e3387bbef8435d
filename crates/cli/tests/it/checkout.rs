//! The checkout sample through the binary: `eshost demo checkout` settles
//! every order on the embedded store, with each confirmation delivered once;
//! the item's release version passes `eshost upgrade check` against streams
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
