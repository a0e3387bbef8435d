//! `eshost test`: spec files run in the sandbox with no database.

use crate::util::*;
use std::process::Command;

fn eshost_test(spec: &std::path::Path) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_eshost"))
        .env_remove("DATABASE_URL")
        .env("ESHOST_CACHE_DIR", cache.path())
        .arg("--modules")
        .arg(modules_dir())
        .arg("test")
        .arg(spec)
        .output()
        .unwrap()
}

#[test]
fn the_flash_sale_spec_passes() {
    let spec = workspace_root().join("guest-flash-sale/tests/flash-sale.spec.toml");
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

#[test]
fn a_wrong_spec_fails_with_diffs() {
    let output = eshost_test(&workspace_root().join("host/tests/data/wrong.spec.toml"));
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

#[test]
fn a_malformed_spec_is_a_one_line_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("typo.spec.toml");
    std::fs::write(
        &spec,
        "aggregate = \"FlashSaleItem\"\n[[case]]\nname = \"x\"\nwhen = { command = \"PurchaseItem\" }\nthen = []\nexpect = 1\n",
    )
    .unwrap();
    let output = eshost_test(&spec);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("typo.spec.toml") && stderr.contains("expect"),
        "{stderr}"
    );
}
