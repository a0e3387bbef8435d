//! Deploying over HTTP: `PUT /v1/modules/{name}` runs the upgrade check
//! and puts a compatible version live (on this server, and on another
//! server on the same store within seconds), refuses an incompatible one
//! once with the check's report, takes only an admin token; a rollback
//! brings the previous version back; the history records each step and
//! who took it.

use crate::util::*;
use eshost::wasm::{Modules, Runtime};
use eshost::{Host, HostOptions};
use eshost_server::auth::{Scope, Token, Tokens};
use eshost_server::{App, ServerConfig};
use serde_json::Value;
use sha2::Digest;

fn tokens() -> Tokens {
    Tokens::new(vec![
        Token::new("dashboard", "read-secret", &[Scope::Read]).unwrap(),
        Token::new("ops", "admin-secret", &Scope::ALL).unwrap(),
    ])
    .unwrap()
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(upgrade_fixture(name)).unwrap()
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A server on `db` with the tokens above, serving the store's live set,
/// seeded from `dir` (none: only the store).
async fn server(db: &TestDb, dir: Option<&std::path::Path>) -> TestServer {
    let runtime = Runtime::new();
    let modules = match dir {
        Some(dir) => runtime.load_dir(dir).unwrap(),
        None => Modules::default(),
    };
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Host::with_options(modules, store, HostOptions::default());
    let config = ServerConfig {
        tokens: tokens(),
        upgrade_check: Some(eshost::upgrade::Selection::All),
        ..ServerConfig::default()
    };
    let app = App::new(host, config).with_reloader(runtime, dir.map(|d| d.to_path_buf()));
    app.reload().await;
    TestServer::start_app(app).await
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deploy_goes_live_after_the_check_and_a_rollback_brings_the_old_version_back() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &original);
    let server = server(&db, Some(dir.path())).await;
    let client = reqwest::Client::new();
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth("admin-secret");
    for (command, body) in [
        ("CreateFlashSale", r#"{"initialStock":5}"#),
        ("PurchaseItem", r#"{"buyerId":"ann","quantity":1}"#),
    ] {
        let url = server.url(&format!(
            "/v1/aggregates/FlashSaleItem/s1/commands/{command}"
        ));
        let (status, _) = answer(
            admin(client.post(url))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(status, 200);
    }
    let put = server.url("/v1/modules/FlashSaleItem");
    let renamed = fixture_bytes("flash-sale-renamed.wasm");
    let v2 = fixture_bytes("flash-sale-v2.wasm");

    // A read token may look, not deploy.
    let (status, body) = answer(client.put(&put).bearer_auth("read-secret").body(v2.clone())).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = answer(
        client
            .get(server.url("/v1/modules/FlashSaleItem/history"))
            .bearer_auth("read-secret"),
    )
    .await;
    assert_eq!(status, 200);

    // Not a component, or another aggregate's: 422, nothing recorded.
    let (status, body) = answer(admin(client.put(&put)).body("not a component")).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (422, Some("invalid_component")),
        "{body}"
    );
    let (status, body) =
        answer(admin(client.put(server.url("/v1/modules/Other"))).body(v2.clone())).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("is aggregate FlashSaleItem, not Other"),
        "{body}"
    );

    // Incompatible: refused with the check's report, once.
    let (status, body) = answer(admin(client.put(&put)).body(renamed.clone())).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (409, Some("upgrade_refused")),
        "{body}"
    );
    assert_eq!(body["check"]["failed"][0]["id"], "s1", "{body}");
    assert!(
        body["check"]["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("event 2 (ItemPurchased)"),
        "{body}"
    );
    let (status, again) = answer(admin(client.put(&put)).body(renamed.clone())).await;
    assert_eq!(status, 409);
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains("refused before, and is not checked again"),
        "{again}"
    );
    let listed = answer(admin(client.get(server.url("/v1/aggregates"))))
        .await
        .1;
    assert_eq!(listed[0]["version"], "0.1.0", "{listed}");

    // Compatible: live at once, recorded with the token's name.
    let (status, deployed) = answer(admin(client.put(&put)).body(v2.clone())).await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["deployment"]["action"], "deployed");
    assert_eq!(deployed["deployment"]["by"], "ops");
    assert_eq!(deployed["deployment"]["digest"], digest_of(&v2));
    assert_eq!(deployed["aggregate"]["version"], "0.2.0");
    assert_eq!(deployed["check"]["streams_checked"], 1, "{deployed}");
    let (status, unchanged) = answer(admin(client.put(&put)).body(v2.clone())).await;
    assert_eq!(
        (status, &unchanged["deployment"]),
        (200, &Value::Null),
        "{unchanged}"
    );

    // Another server on the store, with no directory, serves it.
    let other = self::server(&db, None).await;
    let listed = answer(admin(client.get(other.url("/v1/aggregates"))))
        .await
        .1;
    assert_eq!(listed[0]["digest"], digest_of(&v2), "{listed}");

    // Rolled back: the seeded version is live again, here and there.
    let (status, rolled) = answer(admin(
        client.post(server.url("/v1/modules/FlashSaleItem/rollback")),
    ))
    .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["deployment"]["action"], "rolled_back");
    assert_eq!(rolled["aggregate"]["digest"], digest_of(&original));
    poll("the other server to follow the rollback", async || {
        let listed = answer(admin(client.get(other.url("/v1/aggregates"))))
            .await
            .1;
        (listed[0]["digest"] == digest_of(&original)).then_some(())
    })
    .await;

    let history = answer(admin(
        client.get(server.url("/v1/modules/FlashSaleItem/history")),
    ))
    .await
    .1;
    let steps: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["action"].as_str().unwrap(),
                d["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("rolled_back", "0.1.0"),
            ("deployed", "0.2.0"),
            ("refused", "0.2.0"),
            ("seeded", "0.1.0")
        ],
        "{history}"
    );
    let (status, page) = answer(admin(client.get(server.url(&format!(
        "/v1/modules/FlashSaleItem/history?limit=1&before={}",
        history[1]["id"]
    )))))
    .await;
    assert_eq!(
        (status, page.as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );
    assert_eq!(page[0]["action"], "refused");
    // The other server runs commands on the rolled-back version.
    let url = other.url("/v1/aggregates/FlashSaleItem/s1/commands/PurchaseItem");
    let (status, body) = answer(
        admin(client.post(url))
            .header("content-type", "application/json")
            .body(r#"{"buyerId":"bob","quantity":1}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    other.stop().await;
    server.stop().await;
    db.cleanup().await;
}

/// `PUT /v1/projections/{name}` records a projection's component (admin
/// only; another kind of component or another projection's is a 422), and
/// a server that runs projections switches to it, counts its lag and
/// rebuilds with it; a rollback brings the earlier version back; the
/// history shows each step and who took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_deployed_over_http_runs_and_rolls_back() {
    let db = TestDb::sqlite().await;
    let runtime = Runtime::new();
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Host::with_options(
        runtime.load_dir(&modules_dir()).unwrap(),
        store.clone(),
        HostOptions::default(),
    );
    let empty = tempfile::tempdir().unwrap();
    let supervisor = eshost_read::supervisor::Supervisor::new(
        store.clone(),
        runtime.clone(),
        empty.path().to_path_buf(),
        Vec::new(),
        false,
    );
    let running = supervisor.running();
    let config = ServerConfig {
        tokens: tokens(),
        ..ServerConfig::default()
    };
    let app = App::new(host, config)
        .with_reloader(runtime, None)
        .with_projections(supervisor.running());
    app.reload().await;
    let server = TestServer::start_app(app).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let supervising = tokio::spawn(supervisor.run(Vec::new(), false, stop.clone()));
    let client = reqwest::Client::new();
    let url = |path: &str| server.url(path);
    let first = std::fs::read(projections_dir().join("sales-summary.wasm")).unwrap();
    let second = new_version(&first, "second");

    let put = |token: &'static str, path: &str, bytes: Vec<u8>| {
        client.put(url(path)).bearer_auth(token).body(bytes)
    };
    let (status, _) = answer(put(
        "read-secret",
        "/v1/projections/sales-summary",
        first.clone(),
    ))
    .await;
    assert_eq!(status, 403, "a read token cannot deploy");
    let aggregate = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    let (status, body) = answer(put(
        "admin-secret",
        "/v1/projections/sales-summary",
        aggregate,
    ))
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (422, Some("invalid_component")),
        "{body}"
    );
    let (status, body) = answer(put("admin-secret", "/v1/projections/other", first.clone())).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (422, Some("invalid_component")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("not other"),
        "{body}"
    );

    let (status, body) = answer(put(
        "admin-secret",
        "/v1/projections/sales-summary",
        first.clone(),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["action"], "deployed");
    assert_eq!(body["deployment"]["by"], "ops");
    assert_eq!(body["projection"]["digest"], digest_of(&first));
    assert_eq!(
        body["projection"]["reads"],
        serde_json::json!(["FlashSaleItem", "$subjects"])
    );
    let (status, body) = answer(put(
        "admin-secret",
        "/v1/projections/sales-summary",
        first.clone(),
    ))
    .await;
    assert_eq!(
        (status, &body["deployment"]),
        (200, &Value::Null),
        "live already: {body}"
    );
    let runs = |digest: String| {
        let mut running = running.clone();
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                running.wait_for(|r| r.iter().any(|p| digest_of_hex(&p.digest) == digest)),
            )
            .await
            .is_ok()
        }
    };
    assert!(
        runs(digest_of(&first)).await,
        "the supervisor runs the deployed version"
    );

    // Its status: it runs here, so its lag is counted.
    let projections = poll("the projection's record", async || {
        let (_, body) = answer(
            client
                .get(url("/v1/projections"))
                .bearer_auth("read-secret"),
        )
        .await;
        body.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    assert_eq!(projections[0]["runs_here"], true, "{projections:?}");
    assert!(projections[0]["lag"].is_u64(), "{projections:?}");

    let (status, body) = answer(
        client
            .post(url("/v1/projections/sales-summary/rollback"))
            .bearer_auth("admin-secret"),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (409, Some("no_earlier_version")),
        "{body}"
    );
    let (status, _) = answer(put(
        "admin-secret",
        "/v1/projections/sales-summary",
        second.clone(),
    ))
    .await;
    assert_eq!(status, 200);
    assert!(runs(digest_of(&second)).await, "the second version runs");
    let (status, body) = answer(
        client
            .post(url("/v1/projections/sales-summary/rollback"))
            .bearer_auth("admin-secret"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["action"], "rolled_back");
    assert!(
        runs(digest_of(&first)).await,
        "the rollback runs the first again"
    );

    let (status, body) = answer(
        client
            .post(url("/v1/projections/sales-summary/rebuild"))
            .bearer_auth("admin-secret"),
    )
    .await;
    assert_eq!(status, 202, "rebuilt with the version that runs: {body}");

    let (status, history) = answer(
        client
            .get(url("/v1/projections/sales-summary/history"))
            .bearer_auth("read-secret"),
    )
    .await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["rolled_back", "deployed", "deployed"],
        "{history}"
    );
    let (status, history) = answer(
        client
            .get(url("/v1/modules/sales-summary/history"))
            .bearer_auth("read-secret"),
    )
    .await;
    assert_eq!(
        (status, history),
        (200, serde_json::json!([])),
        "kinds apart"
    );

    stop.cancel();
    supervising.await.unwrap();
    server.stop().await;
    db.cleanup().await;
}

fn digest_of_hex(hex_digest: &str) -> String {
    format!("sha256:{hex_digest}")
}

/// A reactor is deployed over HTTP as a projection is (admin only; another
/// kind of component or another reactor's is a 422); a rollback brings the
/// earlier version back; the history shows each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reactor_deployed_over_http_rolls_back_and_has_a_history() {
    let db = TestDb::sqlite().await;
    let server = server(&db, None).await;
    let client = reqwest::Client::new();
    let put = |token: &'static str, path: &str, bytes: Vec<u8>| {
        client.put(server.url(path)).bearer_auth(token).body(bytes)
    };
    let first = std::fs::read(reactors_dir().join("checkout.wasm")).unwrap();
    let strict = std::fs::read(reactor_fixture("checkout-strict.wasm")).unwrap();

    let (status, _) = answer(put("read-secret", "/v1/reactors/checkout", first.clone())).await;
    assert_eq!(status, 403, "a read token cannot deploy");
    let projection = std::fs::read(projections_dir().join("sales-summary.wasm")).unwrap();
    let (status, body) = answer(put("admin-secret", "/v1/reactors/checkout", projection)).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (422, Some("invalid_component")),
        "{body}"
    );
    let (status, body) = answer(put("admin-secret", "/v1/reactors/other", first.clone())).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (422, Some("invalid_component")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("not other"),
        "{body}"
    );

    let (status, body) = answer(put("admin-secret", "/v1/reactors/checkout", first.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["action"], "deployed");
    assert_eq!(body["deployment"]["kind"], "reactor");
    assert_eq!(body["deployment"]["by"], "ops");
    assert_eq!(body["reactor"]["digest"], digest_of(&first));
    assert_eq!(
        body["reactor"]["reads"],
        serde_json::json!(["Order", "FlashSaleItem"])
    );
    assert_eq!(
        body["reactor"]["sinks"],
        serde_json::json!(["confirmations"])
    );
    let (status, body) = answer(put("admin-secret", "/v1/reactors/checkout", first.clone())).await;
    assert_eq!(
        (status, &body["deployment"]),
        (200, &Value::Null),
        "live already: {body}"
    );
    let (status, body) = answer(put("admin-secret", "/v1/reactors/checkout", strict.clone())).await;
    assert_eq!(
        (status, &body["reactor"]["digest"]),
        (200, &Value::from(digest_of(&strict)))
    );

    let (status, body) = answer(
        client
            .post(server.url("/v1/reactors/checkout/rollback"))
            .bearer_auth("admin-secret"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["action"], "rolled_back");
    assert_eq!(body["reactor"]["digest"], digest_of(&first));
    let (status, body) = answer(
        client
            .post(server.url("/v1/reactors/nothing/rollback"))
            .bearer_auth("admin-secret"),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    let (_, history) = answer(
        client
            .get(server.url("/v1/reactors/checkout/history"))
            .bearer_auth("admin-secret"),
    )
    .await;
    let steps: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["action"].as_str().unwrap(), d["digest"].as_str().unwrap()))
        .collect();
    let (first, strict) = (digest_of(&first), digest_of(&strict));
    assert_eq!(
        steps,
        vec![
            ("rolled_back", first.as_str()),
            ("deployed", strict.as_str()),
            ("deployed", first.as_str()),
        ]
    );
    db.cleanup().await;
}
