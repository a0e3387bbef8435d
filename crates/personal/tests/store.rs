//! The personal store on PostgreSQL and SQLite: declared fields are
//! ciphertext at rest and plaintext when read, one subject has one key
//! whichever host resolves it first, a forgotten subject reads as
//! tombstones on every host, and a rotation moves every key to the new
//! master key.

use eshost_core::{ErasedStream, RecordedEvent, Snapshot, StreamId};
use eshost_personal::snapshots::MAGIC;
use eshost_personal::{Declarations, Keyring, MasterKey, PersonalEvent, PersonalStore, rotate};
use eshost_store::{EventStore, NewCommand, NewEvent, StoreError};
use eshost_test_support::{TestDb, poll};
use serde_json::{Value, json};
use std::sync::Arc;

eshost_test_support::conformance!(
    declared_fields_are_ciphertext_at_rest_and_plaintext_when_read,
    hosts_racing_for_a_new_subject_share_one_key,
    a_forget_records_the_erasure_and_deletes_the_key_and_the_snapshots,
    a_store_without_a_master_key_refuses_to_forget,
    a_rotation_moves_every_key_to_the_new_master_key,
    an_event_without_its_subject_is_refused_and_nothing_is_written,
    a_refused_append_stores_no_key_and_a_group_stores_its_recorded_subjects,
    a_store_from_before_the_subject_column_finds_its_subjects_streams,
    a_subject_returning_after_the_key_ttl_has_their_key_read_not_stored_again,
);

const ITEM: &str = "FlashSaleItem";

fn declarations() -> Declarations {
    let declared = Declarations::default();
    declared.declare(
        ITEM,
        [
            PersonalEvent {
                event: "ItemPurchased".into(),
                subject: "buyerId".into(),
                fields: vec![],
            },
            PersonalEvent {
                event: "ItemShipped".into(),
                subject: "buyerId".into(),
                fields: vec!["address".into()],
            },
        ],
    );
    declared
}

fn keyring(key: &str) -> Keyring {
    Keyring::new(MasterKey::from_base64(key).unwrap(), Vec::new())
}

async fn personal(db: &TestDb, keyring: Keyring) -> (Arc<dyn EventStore>, PersonalStore) {
    let inner = eshost_store::open(&db.url).await.unwrap();
    let store = PersonalStore::open(inner.clone(), keyring, declarations())
        .await
        .unwrap();
    (inner, store)
}

fn command(events: &[(&str, Value)]) -> NewCommand {
    NewCommand {
        command_id: uuid::Uuid::new_v4().to_string(),
        name: "Buy".into(),
        fingerprint: "f".into(),
        events: events
            .iter()
            .map(|(name, payload)| NewEvent {
                name: (*name).into(),
                payload: payload.to_string(),
                metadata: r#"{"commandId":"c"}"#.into(),
                subject: None,
            })
            .collect(),
    }
}

fn payloads(events: &[RecordedEvent]) -> Vec<Value> {
    events.iter().map(|e| e.payload.to_value()).collect()
}

async fn append(
    store: &dyn EventStore,
    id: &str,
    version: u64,
    events: &[(&str, Value)],
) -> Vec<RecordedEvent> {
    store
        .streams()
        .append(&StreamId::new(ITEM, id), version, &[command(events)])
        .await
        .unwrap()
}

async fn declared_fields_are_ciphertext_at_rest_and_plaintext_when_read(db: &TestDb) {
    let (inner, store) = personal(db, keyring(&TEST_KEY)).await;
    let written = [
        ("ItemCreated", json!({"stock": 5})),
        ("ItemPurchased", json!({"buyerId": "ann", "quantity": 1})),
        (
            "ItemShipped",
            json!({"buyerId": "ann", "address": {"city": "Gent"}, "carrier": "bpost"}),
        ),
        ("ItemPurchased", json!({"buyerId": "bob", "quantity": 2})),
    ];
    let appended = append(&store, "item-1", 0, &written).await;
    let plaintext: Vec<Value> = written.iter().map(|(_, p)| p.clone()).collect();
    // The caller gets back what it wrote.
    assert_eq!(payloads(&appended), plaintext);

    // At rest: pseudonyms and ciphertext, never the ids or the address.
    let stored = inner
        .streams()
        .load(&StreamId::new(ITEM, "item-1"), 0)
        .await
        .unwrap();
    let text = serde_json::to_string(&payloads(&stored)).unwrap();
    for secret in ["ann", "bob", "Gent"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(stored[0].payload.to_value(), json!({"stock": 5}));
    assert_eq!(stored[2].payload.to_value()["carrier"], "bpost");
    assert!(
        stored[2].payload.to_value()["address"]
            .as_str()
            .unwrap()
            .starts_with("enc:v1:")
    );
    let ann = stored[1].payload.to_value()["buyerId"].clone();
    assert!(ann.as_str().unwrap().starts_with("psn_"), "{ann}");
    assert_eq!(
        stored[2].payload.to_value()["buyerId"],
        ann,
        "one subject, one pseudonym"
    );
    assert_ne!(stored[3].payload.to_value()["buyerId"], ann);
    assert_eq!(stored[2].metadata["personal"]["fields"], json!(["address"]));
    assert_eq!(stored[2].metadata["commandId"], "c");

    // Read back through every path: plaintext.
    let stream = StreamId::new(ITEM, "item-1");
    assert_eq!(
        payloads(&store.streams().load(&stream, 0).await.unwrap()),
        plaintext
    );
    assert_eq!(
        payloads(&store.log().read_all(0, Some(ITEM), 100).await.unwrap()),
        plaintext
    );
    // And by another host, with nothing cached.
    let (_, other) = personal(db, keyring(&TEST_KEY)).await;
    assert_eq!(
        payloads(&other.streams().load(&stream, 1).await.unwrap()),
        plaintext[1..]
    );
}

/// The master key of the tests that need only one.
static TEST_KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| MasterKey::generate().unwrap());

async fn hosts_racing_for_a_new_subject_share_one_key(db: &TestDb) {
    let (inner, first) = personal(db, keyring(&TEST_KEY)).await;
    let (_, second) = personal(db, keyring(&TEST_KEY)).await;
    let buy = async |store: &PersonalStore, id: &'static str| {
        let events = [("ItemPurchased", json!({"buyerId": "ann", "quantity": 1}))];
        let stream = StreamId::new(ITEM, id);
        store
            .streams()
            .append(&stream, 0, &[command(&events)])
            .await
            .unwrap()
    };
    let (a, b) = tokio::join!(buy(&first, "item-1"), buy(&second, "item-2"));
    assert_eq!(a[0].payload.to_value()["buyerId"], "ann");
    assert_eq!(b[0].payload.to_value()["buyerId"], "ann");
    let pseudonym = |id: &'static str| {
        let inner = inner.clone();
        async move {
            inner
                .streams()
                .load(&StreamId::new(ITEM, id), 0)
                .await
                .unwrap()[0]
                .payload
                .to_value()["buyerId"]
                .clone()
        }
    };
    assert_eq!(pseudonym("item-1").await, pseudonym("item-2").await);
    // Each host reads the other's event.
    let from_second = first
        .streams()
        .load(&StreamId::new(ITEM, "item-2"), 0)
        .await
        .unwrap();
    assert_eq!(from_second[0].payload.to_value()["buyerId"], "ann");

    // A host that meets her later, with nothing cached, tries a row of its
    // own for her, finds hers stored and appends under it.
    let (_, third) = personal(db, keyring(&TEST_KEY)).await;
    let c = buy(&third, "item-3").await;
    assert_eq!(c[0].payload.to_value()["buyerId"], "ann");
    assert_eq!(pseudonym("item-3").await, pseudonym("item-1").await);
    assert_eq!(every_subject(&*inner).await.len(), 1, "one row for ann");
}

/// Every subject's row (none is wrapped by a master key of that id).
async fn every_subject(store: &dyn EventStore) -> Vec<eshost_store::subjects::SubjectKey> {
    store
        .subjects()
        .wrapped_by_others("no such master key", "", 1_000)
        .await
        .unwrap()
}

async fn a_refused_append_stores_no_key_and_a_group_stores_its_recorded_subjects(db: &TestDb) {
    let (inner, store) = personal(db, keyring(&TEST_KEY)).await;
    let purchase = |buyer: &str| [("ItemPurchased", json!({"buyerId": buyer, "quantity": 1}))];
    append(&store, "item-1", 0, &purchase("ann")).await;

    // Version 0 is taken: cat's purchase is refused, and leaves no key.
    let item_1 = StreamId::new(ITEM, "item-1");
    let refused = store
        .streams()
        .append(&item_1, 0, &[command(&purchase("cat"))])
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Conflict { .. }), "{refused}");
    assert_eq!(every_subject(&*inner).await.len(), 1, "ann's row alone");

    // A group with one append refused and one recorded: dan's row is
    // stored with his event, and another host reads it.
    let item_2 = StreamId::new(ITEM, "item-2");
    let (cat, dan) = ([command(&purchase("cat"))], [command(&purchase("dan"))]);
    let outcomes = store
        .streams()
        .append_group(&[
            eshost_store::StreamAppend {
                stream: &item_1,
                expected_version: 0,
                commands: &cat,
            },
            eshost_store::StreamAppend {
                stream: &item_2,
                expected_version: 0,
                commands: &dan,
            },
        ])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Err(StoreError::Conflict { .. })));
    assert_eq!(
        payloads(outcomes[1].as_ref().unwrap()),
        [purchase("dan")[0].1.clone()]
    );
    let (_, other) = personal(db, keyring(&TEST_KEY)).await;
    let read = other.streams().load(&item_2, 0).await.unwrap();
    assert_eq!(read[0].payload.to_value()["buyerId"], "dan");

    // A forget finds a subject's streams by the events that name them:
    // cat's row went in with the group, but none of his events did.
    let cat = store.forget_subject("cat").await.unwrap().unwrap();
    assert_eq!(cat.streams, [], "cat has no recorded event");
    let dan = store.forget_subject("dan").await.unwrap().unwrap();
    assert_eq!(dan.streams, [ErasedStream::from(&item_2)]);
}

async fn a_subject_returning_after_the_key_ttl_has_their_key_read_not_stored_again(db: &TestDb) {
    let (inner, store) = personal(db, keyring(&TEST_KEY)).await;
    let purchase = [("ItemPurchased", json!({"buyerId": "ann", "quantity": 1}))];
    append(&store, "item-1", 0, &purchase).await;
    // On PostgreSQL, any write of ann's row gives it a new xmin.
    let written = async || match db.url.starts_with("postgres") {
        true => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar::<_, String>("SELECT xmin::text FROM subjects")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        false => String::new(),
    };
    let before = written().await;

    tokio::time::sleep(eshost_personal::KEY_TTL + std::time::Duration::from_millis(200)).await;
    let again = append(&store, "item-1", 1, &purchase).await;
    assert_eq!(payloads(&again), [purchase[0].1.clone()]);
    assert_eq!(every_subject(&*inner).await.len(), 1, "one row for ann");
    assert_eq!(written().await, before, "ann's row was written again");
    let read = store
        .streams()
        .load(&StreamId::new(ITEM, "item-1"), 0)
        .await;
    let read = read.unwrap();
    assert_eq!(pseudonym_of(&read[0]), pseudonym_of(&read[1]));
}

/// The pseudonym an event was stored under.
fn pseudonym_of(event: &RecordedEvent) -> String {
    event.metadata["personal"]["subject"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn a_store_from_before_the_subject_column_finds_its_subjects_streams(db: &TestDb) {
    // The last migration of the build before events named their subject.
    let before = if db.url.starts_with("postgres") {
        12
    } else {
        9
    };
    db.migrate_to(before).await;
    let marked = |pseudonym: &str| {
        json!({"commandId": "c", "personal":
            {"subject": pseudonym, "subjectField": "buyerId", "fields": []}})
    };
    let (ann, bob) = (marked("psn_ann"), marked("psn_bob"));
    db.execute(&format!(
        "INSERT INTO events (position, aggregate_name, aggregate_id, sequence_number, \
         event_name, payload, metadata) VALUES \
         (1, '{ITEM}', 'item-1', 1, 'ItemPurchased', '{{}}', '{ann}'), \
         (2, '{ITEM}', 'item-1', 2, 'ItemPurchased', '{{}}', '{bob}'), \
         (3, '{ITEM}', 'item-2', 1, 'ItemPurchased', '{{}}', '{ann}'), \
         (4, '{ITEM}', 'item-3', 1, 'FlashSaleCreated', '{{}}', '{{}}'); \
         INSERT INTO subject_streams (pseudonym, aggregate, id) VALUES \
         ('psn_ann', '{ITEM}', 'item-1'), ('psn_bob', '{ITEM}', 'item-1'), \
         ('psn_ann', '{ITEM}', 'item-2');"
    ))
    .await;

    let store = eshost_store::open(&db.url).await.unwrap();
    let streams = |pseudonym: &'static str| {
        let store = store.clone();
        async move { store.subjects().subject_streams(pseudonym).await.unwrap() }
    };
    let (item_1, item_2) = (StreamId::new(ITEM, "item-1"), StreamId::new(ITEM, "item-2"));
    assert_eq!(streams("psn_ann").await, [item_1.clone(), item_2]);
    assert_eq!(streams("psn_bob").await, [item_1]);
}

async fn a_forget_records_the_erasure_and_deletes_the_key_and_the_snapshots(db: &TestDb) {
    let (inner, store) = personal(db, keyring(&TEST_KEY)).await;
    append(
        &store,
        "item-1",
        0,
        &[
            (
                "ItemShipped",
                json!({"buyerId": "ann", "address": "Veldstraat 1", "carrier": "bpost"}),
            ),
            ("ItemPurchased", json!({"buyerId": "bob", "quantity": 2})),
        ],
    )
    .await;
    append(
        &store,
        "item-2",
        0,
        &[("ItemPurchased", json!({"buyerId": "bob", "quantity": 1}))],
    )
    .await;
    let stream = StreamId::new(ITEM, "item-1");
    let other_stream = StreamId::new(ITEM, "item-2");
    for (stream, version) in [(&stream, 2), (&other_stream, 1)] {
        let snapshot = Snapshot {
            version,
            state: b"state".to_vec(),
        };
        let streams = store.streams();
        streams
            .save_snapshot(stream, "d1", &snapshot)
            .await
            .unwrap();
    }
    // Sealed at rest (the aggregate declares personal data), plain when read.
    let at_rest = inner.streams().load_snapshot(&stream, "d1").await.unwrap();
    let at_rest = at_rest.unwrap().state;
    assert!(at_rest.starts_with(MAGIC) && !at_rest.ends_with(b"state"));
    let read = store.streams().load_snapshot(&stream, "d1").await.unwrap();
    assert_eq!(read.unwrap().state, b"state");
    // Another host reads ann's event, and so holds her key.
    let (_, watcher) = personal(db, keyring(&TEST_KEY)).await;
    let read = payloads(&watcher.streams().load(&stream, 0).await.unwrap());
    assert_eq!(read[0]["buyerId"], "ann");

    let erasure = store.forget_subject("ann").await.unwrap().unwrap();
    assert_eq!(erasure.streams, [ErasedStream::from(&stream)]);
    assert_eq!((erasure.snapshots_deleted, erasure.recorded_now), (1, true));
    let snapshot = |stream: StreamId| {
        let inner = inner.clone();
        async move { inner.streams().load_snapshot(&stream, "d1").await.unwrap() }
    };
    assert!(snapshot(stream.clone()).await.is_none());
    assert!(snapshot(other_stream.clone()).await.is_some(), "bob's only");

    // Her fields read as tombstones at once on the forgetting host; bob's
    // event is as written.
    let tombstone = json!({"$forgotten": erasure.pseudonym});
    let forgotten = json!({"buyerId": tombstone, "address": tombstone, "carrier": "bpost"});
    let read = payloads(&store.streams().load(&stream, 0).await.unwrap());
    assert_eq!(read[0], forgotten);
    assert_eq!(read[1], json!({"buyerId": "bob", "quantity": 2}));

    // The erasure is in the log, naming the pseudonym and the stream. (The
    // log is read gap-safe: a transaction still open elsewhere on the
    // server, another test's, holds new events back for a while.)
    let erasures = poll("the erasure in the log", async || {
        let read = inner.log().read_all(0, Some("$subjects"), 10).await;
        Some(read.unwrap()).filter(|read| !read.is_empty())
    })
    .await;
    assert_eq!(erasures.len(), 1);
    assert_eq!(
        (erasures[0].id.as_str(), erasures[0].name.as_str()),
        (erasure.pseudonym.as_str(), "SubjectForgotten")
    );
    assert_eq!(
        erasures[0].payload.to_value(),
        json!({"subject": erasure.pseudonym, "streams": [{"aggregate": ITEM, "id": "item-1"}]})
    );
    // The other host, which cached her key, forgets her once it reads the
    // erasure (well before its cached key would be read again).
    poll("the other host to read the erasure", async || {
        let read = watcher.log().read_all(0, Some("$subjects"), 10).await;
        Some(()).filter(|()| !read.unwrap().is_empty())
    })
    .await;
    let read = payloads(&watcher.streams().load(&stream, 0).await.unwrap());
    assert_eq!(read[0], forgotten);

    // Every snapshot sealed before the forget is under the key it
    // replaced: none opens, on either host, and its stream is replayed. A
    // snapshot saved now opens on both.
    for host in [&store, &watcher] {
        let read = host.streams().load_snapshot(&other_stream, "d1").await;
        assert_eq!(read.unwrap(), None);
    }
    let newer = Snapshot {
        version: 2,
        state: b"newer".to_vec(),
    };
    let streams = store.streams();
    streams
        .save_snapshot(&other_stream, "d1", &newer)
        .await
        .unwrap();
    for host in [&store, &watcher] {
        let read = host.streams().load_snapshot(&other_stream, "d1").await;
        assert_eq!(read.unwrap(), Some(newer.clone()));
    }

    // Run again: nothing left to forget.
    assert_eq!(store.forget_subject("ann").await.unwrap(), None);

    // Her new purchase gets a new pseudonym and key: nothing links it to
    // what was forgotten.
    append(
        &watcher,
        "item-1",
        2,
        &[("ItemPurchased", json!({"buyerId": "ann", "quantity": 1}))],
    )
    .await;
    let stored = inner.streams().load(&stream, 2).await.unwrap();
    assert_ne!(
        stored[0].payload.to_value()["buyerId"],
        tombstone["$forgotten"]
    );
    assert_eq!(
        payloads(&store.streams().load(&stream, 2).await.unwrap())[0]["buyerId"],
        "ann"
    );
}

/// A store without a master key cannot forget, and says so.
async fn a_store_without_a_master_key_refuses_to_forget(db: &TestDb) {
    let plain = eshost_store::open(&db.url).await.unwrap();
    let refused = plain.forget_subject("ann").await.unwrap_err();
    assert!(refused.to_string().contains("no master key"), "{refused}");
}

async fn a_rotation_moves_every_key_to_the_new_master_key(db: &TestDb) {
    let old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    let (_, store) = personal(db, keyring(&old)).await;
    for (n, buyer) in ["ann", "bob", "carl"].iter().enumerate() {
        let id = format!("item-{n}");
        append(
            &store,
            &id,
            0,
            &[("ItemPurchased", json!({"buyerId": buyer, "quantity": 1}))],
        )
        .await;
    }
    let both = || {
        Keyring::new(
            MasterKey::from_base64(&new).unwrap(),
            vec![MasterKey::from_base64(&old).unwrap()],
        )
    };
    let (_, during) = personal(db, both()).await;
    let rotation = rotate(&during).await.unwrap();
    assert_eq!(
        (rotation.subjects, rotation.store_keys),
        (3, 3),
        "the subjects, and the lookup, fingerprint and snapshot keys"
    );
    // Run again (as after an interruption): nothing left to move.
    let again = rotate(&during).await.unwrap();
    assert_eq!((again.subjects, again.store_keys), (0, 0));

    // The new key alone reads everything; the old one alone opens nothing.
    let (_, after) = personal(db, keyring(&new)).await;
    let read = after.log().read_all(0, Some(ITEM), 10).await.unwrap();
    let buyers: Vec<Value> = read
        .iter()
        .map(|e| e.payload.to_value()["buyerId"].clone())
        .collect();
    assert_eq!(buyers, [json!("ann"), json!("bob"), json!("carl")]);
    let inner = eshost_store::open(&db.url).await.unwrap();
    let refused = PersonalStore::open(inner, keyring(&old), declarations())
        .await
        .err()
        .unwrap();
    let old_id = MasterKey::from_base64(&old).unwrap().id().to_owned();
    let new_id = MasterKey::from_base64(&new).unwrap().id().to_owned();
    assert!(matches!(refused, StoreError::PersonalData(_)), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains(&new_id) && message.contains(&old_id),
        "{message}"
    );
}

async fn an_event_without_its_subject_is_refused_and_nothing_is_written(db: &TestDb) {
    let (inner, store) = personal(db, keyring(&TEST_KEY)).await;
    let stream = StreamId::new(ITEM, "item-1");
    let events = [
        ("ItemCreated", json!({"stock": 5})),
        ("ItemPurchased", json!({"quantity": 1})),
    ];
    let err = store
        .streams()
        .append(&stream, 0, &[command(&events)])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "personal data: ItemPurchased: the subject field `buyerId` is missing or not a string"
    );
    assert!(inner.streams().load(&stream, 0).await.unwrap().is_empty());
}
