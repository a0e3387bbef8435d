//! Personal data, as the command line shows it: what each guest declares
//! (contract 0.3.0), read from the guest itself.

use crate::cli::{Workspace, ok};
use crate::util::*;

#[test]
fn the_flash_sale_declares_its_buyer_the_subject_of_purchases_and_rejections() {
    let ws = Workspace::with_modules(modules_dir());
    let listing: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["aggregates", "--json"]))).unwrap();
    let sale = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == FLASH_SALE)
        .unwrap();
    assert_eq!(sale["contract"], "0.3.0");
    assert_eq!(
        sale["personal"],
        serde_json::json!([
            {"event": "ItemPurchased", "subject": "buyerId", "fields": []},
            {"event": "PurchaseRejected", "subject": "buyerId", "fields": []},
        ])
    );
    // A guest that declares none lists none.
    let bank = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "BankAccount");
    assert!(bank.unwrap().get("personal").is_none(), "{listing}");

    let shown = ok(ws.run(&["aggregates"]));
    assert!(
        shown.contains("  personal ItemPurchased: buyerId (subject)\n"),
        "{shown}"
    );
}

/// A buyer id no random ciphertext or pseudonym would hold by chance.
const ANN: &str = "ann-7c1d9e42";

fn buy(ws: &Workspace, vars: &[(&str, &str)]) {
    for (command, payload) in [
        ("CreateFlashSale", r#"{"initialStock":3}"#.to_owned()),
        (
            "PurchaseItem",
            format!(r#"{{"buyerId":"{ANN}","quantity":1}}"#),
        ),
    ] {
        ok(ws.run_with(&["exec", FLASH_SALE, "s1", command, &payload], vars));
    }
}

fn buyers(ws: &Workspace, vars: &[(&str, &str)]) -> Vec<serde_json::Value> {
    ok(ws.run_with(&["events", FLASH_SALE, "s1"], vars))
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]["buyerId"].clone()
        })
        .filter(|b| !b.is_null())
        .collect()
}

/// Every byte eshost wrote in its working directory, the key aside.
fn written_bytes(ws: &Workspace) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(ws.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "key") {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn on_the_embedded_store_a_buyer_is_ciphertext_at_rest_under_a_key_made_beside_it() {
    let ws = Workspace::new();
    buy(&ws, &[]);
    let key = ws.path().join("eshost.db.key");
    assert!(key.is_file(), "no key made beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(buyers(&ws, &[]), [serde_json::json!(ANN)]);
    let written = written_bytes(&ws);
    assert!(
        holds(&written, "FlashSaleCreated"),
        "the store's files were read"
    );
    assert!(
        !holds(&written, ANN),
        "the buyer's id is in plaintext in the store"
    );

    // A lost key is not replaced by a new one, which would open nothing:
    // the error says which key is missing, and where it was.
    std::fs::rename(&key, ws.path().join("elsewhere.key")).unwrap();
    let lost = ws.run(&["events", FLASH_SALE, "s1"]);
    assert_eq!(lost.status.code(), Some(3));
    let error = String::from_utf8_lossy(&lost.stderr);
    assert!(error.contains("eshost.db.key is missing"), "{error}");
    assert!(!key.exists());
    // Named where it is now, it opens the store again.
    let moved = ws.path().join("elsewhere.key");
    let vars = [("ESHOST_MASTER_KEY_FILE", moved.to_str().unwrap())];
    assert_eq!(buyers(&ws, &vars), [serde_json::json!(ANN)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_operator_key_is_used_and_rotated() {
    let db = TestDb::postgres().await;
    let ws = Workspace::new();
    let old = ws.path().join("old.key");
    let new = ws.path().join("new.key");
    for file in [&old, &new] {
        ok(ws.run(&["personal", "new-key", "--out", file.to_str().unwrap()]));
    }
    let again = ws.run(&["personal", "new-key", "--out", old.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot create the key file"));

    let url = db.url.as_str();
    let with_old = [
        ("ESHOST_DATABASE_URL", url),
        ("ESHOST_MASTER_KEY_FILE", old.to_str().unwrap()),
    ];
    buy(&ws, &with_old);
    assert_eq!(buyers(&ws, &with_old), [serde_json::json!(ANN)]);
    let stored: Vec<String> = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT payload::text FROM events")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|p| !p.contains(ANN)), "{stored:?}");

    let rotate = [
        ("ESHOST_DATABASE_URL", url),
        ("ESHOST_MASTER_KEY_FILE", new.to_str().unwrap()),
        ("ESHOST_PREVIOUS_MASTER_KEY_FILES", old.to_str().unwrap()),
    ];
    let rotated: serde_json::Value =
        serde_json::from_str(&ok(ws.run_with(&["personal", "rotate", "--json"], &rotate))).unwrap();
    assert_eq!(
        (&rotated["subjects"], &rotated["store_keys"]),
        (&1.into(), &1.into())
    );
    let with_new = [
        ("ESHOST_DATABASE_URL", url),
        ("ESHOST_MASTER_KEY_FILE", new.to_str().unwrap()),
    ];
    assert_eq!(buyers(&ws, &with_new), [serde_json::json!(ANN)]);
    // The old key alone no longer opens the store, and says why.
    let refused = ws.run_with(&["events", FLASH_SALE, "s1"], &with_old);
    assert_eq!(refused.status.code(), Some(3));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("is not configured"), "{error}");
    db.cleanup().await;
}
