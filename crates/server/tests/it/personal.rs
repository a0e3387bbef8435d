//! Forgetting a data subject while a server serves their streams: over
//! HTTP, and by another host (here, a second store over the database),
//! whose erasure the server reads from the log. Either way the server's
//! cached state stops showing the subject, and the counts hold.

use crate::util::*;
use eshost::wasm::Runtime;
use eshost::{Host, HostOptions};
use eshost_personal::{Keyring, MasterKey, PersonalStore};
use eshost_server::{App, ServerConfig};
use serde_json::{Value, json};
use std::sync::Arc;

eshost_test_support::conformance!(
    a_forget_here_or_by_another_host_clears_the_served_state,
    a_server_without_a_master_key_refuses_to_forget,
);

async fn personal_store(db: &TestDb, key: &str) -> Arc<PersonalStore> {
    let keyring = Keyring::new(MasterKey::from_base64(key).unwrap(), Vec::new());
    let inner = eshost::store::open(&db.url).await.unwrap();
    Arc::new(
        PersonalStore::open(inner, keyring, Default::default())
            .await
            .unwrap(),
    )
}

async fn send(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Value) {
    let answer = client.execute(request.build().unwrap()).await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn a_forget_here_or_by_another_host_clears_the_served_state(db: &TestDb) {
    let key = MasterKey::generate().unwrap();
    let modules = Runtime::new().load_dir(&modules_dir()).unwrap();
    let host = Host::with_options(
        modules,
        personal_store(db, &key).await,
        HostOptions::default(),
    );
    let server = TestServer::start_app(App::new(host, ServerConfig::default())).await;
    let client = reqwest::Client::new();
    let command = |name: &str, body: String| {
        client
            .post(server.url(&format!("/v1/aggregates/FlashSaleItem/s1/commands/{name}")))
            .header("content-type", "application/json")
            .body(body)
    };
    assert_eq!(
        send(
            &client,
            command("CreateFlashSale", r#"{"initialStock":5}"#.into())
        )
        .await
        .0,
        200
    );
    for buyer in ["ann", "bob"] {
        let body = format!(r#"{{"buyerId":"{buyer}","quantity":1}}"#);
        assert_eq!(send(&client, command("PurchaseItem", body)).await.0, 200);
    }
    let state = || async {
        let (status, answer) = send(
            &client,
            client.get(server.url("/v1/aggregates/FlashSaleItem/s1")),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        answer["state"].clone()
    };
    assert_eq!(state().await["buyers"], json!(["ann", "bob"]));

    // Over HTTP: the server's own cached state is dropped at once.
    let forget = |subject: &str| {
        client
            .post(server.url("/v1/admin/forget"))
            .header("content-type", "application/json")
            .body(json!({ "subject": subject }).to_string())
    };
    let (status, forgot) = send(&client, forget("ann")).await;
    assert_eq!(status, 200, "{forgot}");
    assert_eq!(forgot["forgotten"], true);
    assert_eq!(
        forgot["erasure"]["streams"],
        json!([{"aggregate": "FlashSaleItem", "id": "s1"}])
    );
    let ann = forgot["erasure"]["pseudonym"].clone();
    let served = state().await;
    assert_eq!(served["buyers"], json!([ann, "bob"]));
    assert_eq!((&served["sold"], &served["stock"]), (&json!(2), &json!(3)));
    assert_eq!(
        send(&client, forget("ann")).await,
        (200, json!({"forgotten": false}))
    );
    let (status, refused) = send(
        &client,
        client
            .post(server.url("/v1/admin/forget"))
            .body(r#"{"who":"bob"}"#),
    )
    .await;
    assert_eq!((status, &refused["kind"]), (422, &json!("invalid_payload")));

    // By another host: the server reads the erasure from the log (within a
    // second, or later on a loaded database) and drops its cached state. It
    // must drop its cached key of bob too: a state hydrated again with it
    // would show him, and stay cached.
    let other = personal_store(db, &key).await;
    let erasure = eshost_store::EventStore::forget_subject(&*other, "bob")
        .await
        .unwrap()
        .unwrap();
    let expected = json!([ann, erasure.pseudonym]);
    let served = poll("the server to drop bob", async || {
        let served = state().await;
        (served["buyers"] == expected).then_some(served)
    })
    .await;
    assert_eq!((&served["sold"], &served["stock"]), (&json!(2), &json!(3)));
    // And the item takes new purchases.
    let body = r#"{"buyerId":"carl","quantity":1}"#.to_owned();
    assert_eq!(send(&client, command("PurchaseItem", body)).await.0, 200);
    assert_eq!(state().await["sold"], 3);
}

async fn a_server_without_a_master_key_refuses_to_forget(db: &TestDb) {
    let modules = Runtime::new().load_dir(&modules_dir()).unwrap();
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Host::with_options(modules, store, HostOptions::default());
    let server = TestServer::start_app(App::new(host, ServerConfig::default())).await;
    let client = reqwest::Client::new();
    let (status, refused) = send(
        &client,
        client
            .post(server.url("/v1/admin/forget"))
            .header("content-type", "application/json")
            .body(r#"{"subject":"ann"}"#),
    )
    .await;
    assert_eq!((status, &refused["kind"]), (409, &json!("no_master_key")));
}
