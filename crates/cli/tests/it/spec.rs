//! `eshost test`: spec files run in the sandbox with no database.

use crate::util::*;
use std::process::Command;

fn eshost_test(spec: &std::path::Path) -> std::process::Output {
    eshost_test_with(spec, &reactors_dir())
}

/// `eshost test` with the reactors of `reactors`.
fn eshost_test_with(spec: &std::path::Path, reactors: &std::path::Path) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_eshost"))
        .env_remove("DATABASE_URL")
        .env("ESHOST_CACHE_DIR", cache.path())
        .arg("--modules")
        .arg(modules_dir())
        .arg("--projections")
        .arg(projections_dir())
        .arg("--reactors")
        .arg(reactors)
        .arg("test")
        .arg(spec)
        .output()
        .unwrap()
}

#[test]
fn the_flash_sale_spec_passes() {
    let spec = workspace_root().join("examples/flash-sale/tests/flash-sale.spec.toml");
    let output = eshost_test(&spec);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("  ok    ").count(), 9, "{stdout}");
    assert_eq!(
        stdout.trim().lines().last(),
        Some("9 passed, 0 failed"),
        "{stdout}"
    );
}

/// Checks that `eshost test` succeeded with `summary` as its last line;
/// returns its stdout.
pub fn assert_passed(output: &std::process::Output, summary: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim().lines().last(), Some(summary), "{stdout}");
    stdout
}

#[test]
fn the_sales_summary_projection_spec_passes() {
    let spec = workspace_root().join("examples/sales-summary/tests/sales-summary.spec.toml");
    assert_passed(&eshost_test(&spec), "5 passed, 0 failed");
}

#[test]
fn the_checkout_reactor_spec_passes() {
    let spec = workspace_root().join("examples/checkout/checkout.spec.toml");
    assert_passed(&eshost_test(&spec), "9 passed, 0 failed");
}

/// The same spec file against the checkout reactor written in TypeScript.
#[test]
fn the_checkout_spec_passes_against_the_typescript_reactor_too() {
    let Some(reactors) = TYPESCRIPT_REACTOR.modules_dir() else {
        return;
    };
    let spec = workspace_root().join("examples/checkout/checkout.spec.toml");
    assert_passed(&eshost_test_with(&spec, &reactors), "9 passed, 0 failed");
}

/// The same spec file against the checkout reactor written in Python.
#[test]
fn the_checkout_spec_passes_against_the_python_reactor_too() {
    let Some(reactors) = PYTHON_REACTOR.modules_dir() else {
        return;
    };
    let spec = workspace_root().join("examples/checkout/checkout.spec.toml");
    assert_passed(&eshost_test_with(&spec, &reactors), "9 passed, 0 failed");
}

/// A reactor case whose actions differ shows the difference; one that
/// gives an event the reactor does not subscribe to says so.
#[test]
fn a_wrong_reactor_spec_fails_with_a_diff_of_the_actions() {
    let spec = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        spec.path(),
        r#"
reactor = "checkout"
[[case]]
name = "wrong: forgets the payment timer"
given = { aggregate = "Order", id = "o1", event = "OrderPlaced", payload = { itemId = "s1", buyerId = "ann", quantity = 1 } }
then = [
  { send = { aggregate = "FlashSaleItem", id = "s1", command = "PurchaseItem", payload = { buyerId = "ann", quantity = 1 }, correlation_id = "order:o1" } },
]

[[case]]
name = "wrong: an event it does not receive"
given = { aggregate = "Order", id = "o1", event = "OrderPaid" }
then = []
"#,
    )
    .unwrap();
    let output = eshost_test(spec.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("actions differ"), "{stdout}");
    assert!(stdout.contains("+     \"schedule\": {"), "{stdout}");
    assert!(
        stdout.contains("checkout does not subscribe to Order OrderPaid"),
        "{stdout}"
    );
    assert_eq!(
        stdout.trim().lines().last(),
        Some("0 passed, 2 failed"),
        "{stdout}"
    );
}

#[test]
fn a_wrong_projection_spec_fails_with_a_diff_of_the_documents() {
    let spec = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        spec.path(),
        r#"
projection = "sales-summary"
[[case]]
name = "wrong: counts a purchase twice"
given = [
  { id = "s1", event = "FlashSaleCreated", payload = { itemId = "s1", initialStock = 3 } },
  { id = "s1", event = "ItemPurchased", payload = { buyerId = "ann", quantity = 1 } },
]
then = { "item:s1" = { stock = 1, sold = 2, buyers = 2, rejected = 0, lastPosition = 2 }, total = { sold = 2, items = 1, lastPosition = 2 } }
[[case]]
name = "wrong: expects an error"
given = [{ id = "s1", event = "FlashSaleCreated", payload = { itemId = "s1", initialStock = 3 } }]
error = "anything"
"#,
    )
    .unwrap();
    let output = eshost_test(spec.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.trim().lines().last(),
        Some("0 passed, 2 failed"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"-     "sold": 2"#), "{stdout}");
    assert!(stdout.contains(r#"+     "sold": 1"#), "{stdout}");
    assert!(stdout.contains("but every event was projected"), "{stdout}");
}

#[test]
fn a_wrong_spec_fails_with_diffs() {
    let output = eshost_test(&workspace_root().join("crates/cli/tests/data/wrong.spec.toml"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.trim().lines().last(),
        Some("1 passed, 3 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  FAIL  wrong: expects a purchase where stock ran out"),
        "{stdout}"
    );
    // The diff shows what was expected and what happened.
    assert!(
        stdout.contains(r#"- ItemPurchased {"buyerId":"ann","quantity":1}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"+ PurchaseRejected {"buyerId":"ann","reason":"out_of_stock"}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected error invalid-command, but the command produced"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"-   "stock": 5"#) && stdout.contains(r#"+   "stock": 3"#),
        "{stdout}"
    );
    assert_eq!(stderr.trim(), "error: 3 of 4 cases failed");
}

/// A spec file that cannot be used exits 2 with the TOML error on its own
/// lines under the file's name, and does not stop the other files; an empty
/// file and an unknown error kind are spec errors too.
#[test]
fn a_broken_spec_is_reported_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let typo = write(
        "typo.spec.toml",
        "aggregate = \"FlashSaleItem\"\n[[case]]\nname = \"x\"\nwhen = { command = \"PurchaseItem\" }\nthen = []\nexpect = 1\n",
    );
    let empty = write("empty.spec.toml", "aggregate = \"FlashSaleItem\"\n");
    let kind = write(
        "kind.spec.toml",
        "aggregate = \"FlashSaleItem\"\n[[case]]\nname = \"y\"\nwhen = { command = \"PurchaseItem\" }\nerror = \"invalid-comand\"\n",
    );
    let good = workspace_root().join("examples/flash-sale/tests/flash-sale.spec.toml");
    let cache = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_eshost"))
        .env_remove("DATABASE_URL")
        .env("ESHOST_CACHE_DIR", cache.path())
        .arg("--modules")
        .arg(modules_dir())
        .arg("test")
        .args([&typo, &good, &empty, &kind])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // The good file ran in full, after the broken one.
    assert!(stdout.contains("flash-sale.spec.toml"), "{stdout}");
    assert!(stdout.contains("9 passed, 0 failed"), "{stdout}");
    // Each broken file is named, its reason on the lines under it.
    let typo_report = stderr
        .split("typo.spec.toml: spec error:")
        .nth(1)
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(typo_report.contains("line 6"), "{stderr}");
    assert!(typo_report.contains("unknown field `expect`"), "{stderr}");
    assert!(
        stderr.contains("empty.spec.toml: spec error:\n  no cases"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown error kind \"invalid-comand\""),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("error: 3 of 4 spec files could not be used (see above)"),
        "{stderr}"
    );
}

/// A new guest author's slips get a hint, not a puzzle: a command the
/// guest does not declare is flagged even when the case expects
/// `unknown-command` (the host refuses it before the guest could), a
/// `state` field the state lacks is named as missing (it showed as null),
/// and a `[case]` table is told to be `[[case]]`.
#[test]
fn a_new_author_s_slips_get_hints() {
    let dir = tempfile::tempdir().unwrap();
    let slips = dir.path().join("slips.spec.toml");
    std::fs::write(
        &slips,
        r#"aggregate = "FlashSaleItem"

[[case]]
name = "a typo in the command"
when = { command = "PurchaseItm", payload = { buyerId = "ann", quantity = 1 } }
error = "unknown-command"

[[case]]
name = "a typo in a state field"
when = { command = "CreateFlashSale", payload = { initialStock = 5 } }
state = { stok = 5 }
"#,
    )
    .unwrap();
    let output = eshost_test(&slips);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0 passed, 2 failed"), "{stdout}");
    assert!(
        stdout.contains(
            "FlashSaleItem does not declare the command PurchaseItm (it declares CreateFlashSale, PurchaseItem)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the state has no field \"stok\""),
        "{stdout}"
    );

    let single = dir.path().join("single.spec.toml");
    std::fs::write(
        &single,
        "aggregate = \"FlashSaleItem\"\n[case]\nname = \"x\"\nwhen = { command = \"CreateFlashSale\" }\nerror = \"invalid-payload\"\n",
    )
    .unwrap();
    let output = eshost_test(&single);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("write each case as [[case]]"), "{stderr}");
}
