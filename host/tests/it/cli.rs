//! The `eshost` binary, driven as a user would.

use crate::util::*;
use std::process::Command;

fn eshost() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eshost"));
    cmd.env_remove("DATABASE_URL").env_remove("ESHOST_MODULES");
    cmd
}

#[tokio::test]
async fn demo_flash_sale_json() {
    let db = TestDb::new().await;
    let output = eshost()
        .args([
            "demo",
            "flash-sale",
            "--json",
            "--database-url",
            &db.url,
            "--modules",
        ])
        .arg(modules_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Exactly one JSON object on stdout.
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(stdout.trim().lines().count(), 1);
    assert_eq!(report["purchased"], 5);
    assert_eq!(report["rejected"], 3);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["stock_remaining"], 0);
    assert_eq!(report["sold"], 5);
    assert_eq!(report["events"], 9);
    assert!(report["retries"].is_u64());
    db.drop_schema().await;
}

#[test]
fn demo_without_a_database_says_so_in_one_line() {
    let output = eshost()
        .args(["demo", "flash-sale", "--modules"])
        .arg(modules_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn demo_with_a_missing_modules_directory_names_it() {
    let output = eshost()
        .args([
            "demo",
            "flash-sale",
            "--database-url",
            "postgres://nowhere/none",
            "--modules",
            "/no/such/dir",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/no/such/dir"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
