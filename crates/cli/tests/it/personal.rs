//! Personal data, as the command line shows it: what each guest declares
//! (contract 0.3.0), read from the guest itself; buyers encrypted at rest
//! on both stores; and `eshost forget`, after which nothing of the buyer
//! is left to find, even when a forget was killed halfway.

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
    assert_eq!(sale["personal"], declared_buyer());
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

/// What every flash sale declares, in whatever language.
fn declared_buyer() -> serde_json::Value {
    serde_json::json!([
        {"event": "ItemPurchased", "subject": "buyerId", "fields": []},
        {"event": "PurchaseRejected", "subject": "buyerId", "fields": []},
    ])
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
        (&1.into(), &3.into()),
        "ann's key, and the store's lookup, fingerprint and snapshot keys"
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

/// Another buyer, who is not forgotten.
const BOB: &str = "bob-52e0b7aa";

/// A sale of 3 that bob, then ann, buy from: she is its latest buyer.
fn bob_then_ann_buy(ws: &Workspace, vars: &[(&str, &str)]) {
    let create = r#"{"initialStock":3}"#.to_owned();
    for (command, payload, id) in [
        ("CreateFlashSale", create, "create"),
        ("PurchaseItem", purchase(BOB), BOB_BUYS),
        ("PurchaseItem", purchase(ANN), ANN_BUYS),
    ] {
        let args = [
            "exec",
            FLASH_SALE,
            "s1",
            command,
            &payload,
            "--command-id",
            id,
        ];
        ok(ws.run_with(&args, vars));
    }
}

/// One unit, bought by `buyer`.
fn purchase(buyer: &str) -> String {
    format!(r#"{{"buyerId":"{buyer}","quantity":1}}"#)
}

/// The command ids of bob's and ann's purchases.
const BOB_BUYS: &str = "bob-buys-s1";
const ANN_BUYS: &str = "ann-buys-s1";

/// The SHA-256 a store without personal data records a purchase under: a
/// dump that held it would confirm a guess at who bought.
fn plain_fingerprint(buyer: &str) -> String {
    eshost_core::command::fingerprint("PurchaseItem", &purchase(buyer))
}

/// The sample projection's item document: its latest buyer is personal data.
fn item_view(ws: &Workspace, vars: &[(&str, &str)]) -> serde_json::Value {
    ok(ws.run_with(&["projection", "run", "--once"], vars));
    let item = ok(ws.run_with(&["view", "sales-summary", "item:s1"], vars));
    serde_json::from_str(&item).unwrap()
}

fn sold_and_stock(ws: &Workspace, vars: &[(&str, &str)]) -> (u64, u64) {
    let state: serde_json::Value =
        serde_json::from_str(&ok(ws.run_with(&["state", FLASH_SALE, "s1"], vars))).unwrap();
    (
        state["sold"].as_u64().unwrap(),
        state["stock"].as_u64().unwrap(),
    )
}

fn forget(ws: &Workspace, vars: &[(&str, &str)]) -> serde_json::Value {
    serde_json::from_str(&ok(ws.run_with(&["forget", "--json", ANN], vars))).unwrap()
}

#[test]
fn after_a_forget_nothing_of_the_buyer_is_left_in_the_embedded_store_and_the_counts_hold() {
    let ws = Workspace::new();
    // A snapshot after every command: the state holds buyers' ids.
    let vars = [("ESHOST_SNAPSHOT_EVERY", "1")];
    bob_then_ann_buy(&ws, &vars);
    assert_eq!(item_view(&ws, &vars)["lastBuyer"], ANN);
    assert!(
        holds(&written_bytes(&ws), ANN),
        "the view holds her id, so the search can find it"
    );
    assert!(
        !holds(&written_bytes(&ws), &plain_fingerprint(ANN)),
        "her purchase's plain fingerprint is in the store"
    );
    assert_eq!(sold_and_stock(&ws, &vars), (2, 1));

    let forgot = forget(&ws, &vars);
    assert_eq!(forgot["forgotten"], true, "{forgot}");
    let erasure = &forgot["erasure"];
    assert_eq!(
        erasure["streams"],
        serde_json::json!([{"aggregate": FLASH_SALE, "id": "s1"}])
    );
    assert_eq!(erasure["snapshotsDeleted"], 1);
    // The projection reads the erasure and clears her from the item.
    let item = item_view(&ws, &vars);
    assert!(item.get("lastBuyer").is_none(), "{item}");
    assert_eq!(item["sold"], 2);
    let written = written_bytes(&ws);
    assert!(
        holds(&written, "SubjectForgotten"),
        "the erasure is in the file"
    );
    assert!(
        !holds(&written, ANN),
        "her id is still in the store's files"
    );

    // Her purchase shows as forgotten, bob's as his; the counts hold and
    // the item takes new purchases.
    let tombstone = serde_json::json!({"$forgotten": erasure["pseudonym"]});
    assert_eq!(buyers(&ws, &vars), [serde_json::json!(BOB), tombstone]);
    assert_eq!(sold_and_stock(&ws, &vars), (2, 1));
    let carl = r#"{"buyerId":"carl","quantity":1}"#;
    ok(ws.run_with(&["exec", FLASH_SALE, "s1", "PurchaseItem", carl], &vars));
    assert_eq!(sold_and_stock(&ws, &vars), (3, 0));

    let again = ok(ws.run_with(&["forget", ANN], &vars));
    assert!(again.starts_with("nothing to forget"), "{again}");

    // Her purchase's fingerprint is cleared, and a repeat of it is still
    // answered with what it recorded.
    let repeat = ["exec", FLASH_SALE, "s1", "PurchaseItem", &purchase(ANN)];
    let repeat = ws.run_with(&[&repeat[..], &["--command-id", ANN_BUYS]].concat(), &vars);
    let said = String::from_utf8_lossy(&repeat.stderr);
    assert!(said.contains("was already recorded"), "{said}");
    assert!(repeat.status.success(), "{said}");
}

/// The flash sale in another language declares its buyer through its
/// SDK's types as the Rust one does, and a forget reaches its state: the
/// buyer's place holds their pseudonym, and the counts hold.
fn declares_its_buyer_and_a_forget_reaches_its_state(language: &Language) {
    let Some(dir) = language.modules_dir() else {
        return;
    };
    let ws = Workspace::with_modules(dir);
    let cache = compiled_code_cache();
    let vars = [("ESHOST_CACHE_DIR", cache.to_str().unwrap())];
    let listing: serde_json::Value =
        serde_json::from_str(&ok(ws.run_with(&["aggregates", "--json"], &vars))).unwrap();
    assert_eq!(listing[0]["contract"], "0.3.0", "{listing}");
    assert_eq!(listing[0]["personal"], declared_buyer());

    bob_then_ann_buy(&ws, &vars);
    let state = |ws: &Workspace| -> serde_json::Value {
        serde_json::from_str(&ok(ws.run_with(&["state", FLASH_SALE, "s1"], &vars))).unwrap()
    };
    assert_eq!(state(&ws)["buyers"], serde_json::json!([BOB, ANN]));
    assert!(!holds(&written_bytes(&ws), ANN), "her id in plaintext");

    let forgot = forget(&ws, &vars);
    let pseudonym = &forgot["erasure"]["pseudonym"];
    assert!(pseudonym.as_str().unwrap().starts_with("psn_"), "{forgot}");
    let after = state(&ws);
    assert_eq!(after["buyers"], serde_json::json!([BOB, pseudonym]));
    assert_eq!((&after["sold"], &after["stock"]), (&2.into(), &1.into()));
}

#[test]
fn the_typescript_flash_sale_declares_its_buyer_and_a_forget_reaches_its_state() {
    declares_its_buyer_and_a_forget_reaches_its_state(&TYPESCRIPT);
}

#[test]
fn the_python_flash_sale_declares_its_buyer_and_a_forget_reaches_its_state() {
    declares_its_buyer_and_a_forget_reaches_its_state(&PYTHON);
}

#[test]
fn a_store_without_a_key_cannot_forget_and_says_so() {
    let ws = Workspace::new();
    let refused = ws.run(&["forget", ANN]);
    assert_eq!(refused.status.code(), Some(3));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("no master key is configured"), "{error}");
}

/// The item's document once `check` holds of it. On PostgreSQL the log is
/// read gap-safe: another test's transaction, open on the same server, can
/// hold the newest events back from a projection for a moment.
async fn item_view_until(
    ws: &Workspace,
    vars: &[(&str, &str)],
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..100 {
        let item = item_view(ws, vars);
        if check(&item) {
            return item;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the projection never showed the item as expected");
}

/// Everything `pg_dump` writes of the test's database: its schema, where
/// every table eshost wrote is (a dump of the whole server would race the
/// other tests creating and dropping theirs).
fn pg_dump(db: &TestDb) -> Vec<u8> {
    let schema = db.schema().expect("a PostgreSQL test database");
    let dump = std::process::Command::new("pg_dump")
        .arg(&db.url)
        .args(["--schema", schema])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    dump.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_forget_killed_halfway_is_finished_by_running_it_again() {
    use sqlx::{Connection, Row};
    let db = TestDb::postgres().await;
    let ws = Workspace::new();
    let key = ws.path().join("master.key");
    ok(ws.run(&["personal", "new-key", "--out", key.to_str().unwrap()]));
    let url = db.url.as_str();
    let vars = [
        ("ESHOST_DATABASE_URL", url),
        ("ESHOST_MASTER_KEY_FILE", key.to_str().unwrap()),
        ("ESHOST_SNAPSHOT_EVERY", "1"),
    ];
    bob_then_ann_buy(&ws, &vars);
    item_view_until(&ws, &vars, |item| item["lastBuyer"] == ANN).await;
    let dump = pg_dump(&db);
    assert!(holds(&dump, ANN), "the view holds her id");
    assert!(
        !holds(&dump, &plain_fingerprint(ANN)),
        "her plain fingerprint"
    );
    assert!(
        !holds(&dump, &plain_fingerprint(BOB)),
        "his plain fingerprint"
    );

    // Hold the subjects table, so the forget records the erasure and then
    // waits to delete her key; kill it there.
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE subjects IN EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut forgetting = ws.spawn_with(&["forget", ANN], &vars);
    let mut watcher = sqlx::PgConnection::connect(url).await.unwrap();
    let waiting = "SELECT (SELECT count(*) FROM events WHERE aggregate_name = '$subjects') AS erasures, \
         (SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'subjects'::regclass) AS waiting";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let row = sqlx::query(waiting).fetch_one(&mut watcher).await.unwrap();
        let (erasures, waiting): (i64, i64) = (row.get("erasures"), row.get("waiting"));
        if erasures == 1 && waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the forget never reached the key's deletion"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    forgetting.kill().unwrap();
    forgetting.wait().unwrap();
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    // Half done: the erasure is recorded, her key and snapshot are not gone.
    let subjects: i64 = sqlx::query_scalar("SELECT count(*) FROM subjects")
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert_eq!(subjects, 2);
    assert_eq!(buyers(&ws, &vars)[1], ANN);

    // Run again: finished, as the erasure it had recorded.
    let forgot = forget(&ws, &vars);
    assert_eq!(forgot["forgotten"], true, "{forgot}");
    assert_eq!(forgot["erasure"]["recordedNow"], false);
    assert_eq!(forgot["erasure"]["snapshotsDeleted"], 1);
    let erasures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_name = '$subjects'")
            .fetch_one(&mut watcher)
            .await
            .unwrap();
    assert_eq!(erasures, 1, "one erasure, however many runs");
    item_view_until(&ws, &vars, |item| item.get("lastBuyer").is_none()).await;
    let dump = pg_dump(&db);
    assert!(holds(&dump, "SubjectForgotten"), "the dump was read");
    assert!(!holds(&dump, ANN), "her id is still in the database");
    // Her purchase's keyed fingerprint is cleared too; bob's is kept.
    let fingerprint = |id: &'static str| {
        sqlx::query_scalar::<_, String>("SELECT fingerprint FROM commands WHERE command_id = $1")
            .bind(id)
    };
    let hers = fingerprint(ANN_BUYS).fetch_one(&mut watcher).await.unwrap();
    assert_eq!(hers, eshost_core::command::FORGOTTEN_FINGERPRINT);
    let his = fingerprint(BOB_BUYS).fetch_one(&mut watcher).await.unwrap();
    assert!(his.starts_with("keyed:"), "{his}");

    let tombstone = serde_json::json!({"$forgotten": forgot["erasure"]["pseudonym"]});
    assert_eq!(buyers(&ws, &vars), [serde_json::json!(BOB), tombstone]);
    assert_eq!(sold_and_stock(&ws, &vars), (2, 1));
    assert_eq!(forget(&ws, &vars), serde_json::json!({"forgotten": false}));
    db.cleanup().await;
}
