//! The reactors over HTTP, on both stores: a parked event listed with its
//! reason, a retry asked for (404 with nothing to retry), the policy set
//! (422 for one that is not), and what `GET /v1/reactors` and the metrics
//! show of it.

use crate::util::*;
use eshost::store::reactions::{Reaction, ReactionPage};
use eshost_server::{App, ServerConfig};
use serde_json::{Value, json};

crate::conformance!(a_parked_event_is_listed_retried_and_the_policy_set_over_http);

async fn a_parked_event_is_listed_retried_and_the_policy_set_over_http(db: &TestDb) {
    let host = db.default_host().await;
    let store = host.store().clone();
    let reactions = store.reactions();
    reactions
        .reactor_checkpoint("checkout", "0.1.0", "ab12", 1)
        .await
        .unwrap();
    let parked = [Reaction {
        position: 7,
        recorded_at_ms: 1,
        event: "Order o1 OrderPlaced #1".into(),
        outcome: Err("missing field `buyerId`".into()),
    }];
    let page = ReactionPage {
        reactor: "checkout",
        version: "0.1.0",
        digest: "ab12",
        from: 0,
        to: 9,
        reactions: &parked,
        now_ms: 2,
    };
    assert!(reactions.record_reactions(&page).await.unwrap());
    let config = ServerConfig {
        read_side_check: std::time::Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let app = App::new(host, config)
        .with_reactor_reads([("checkout".to_owned(), vec!["Order".to_owned()])].into());
    let server = TestServer::start_app(app).await;
    let client = reqwest::Client::new();
    let get = async |path: &str| -> Value {
        let answer = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        answer.json().await.unwrap()
    };

    let listed = get("/v1/reactors").await;
    assert_eq!(
        listed,
        json!([{"name": "checkout", "version": "0.1.0", "digest": "sha256:ab12", "position": 9,
                "lag": 0, "parked": 1, "timers": 0, "pending": 0, "on_failure": "park"}])
    );
    // And in the metrics, once the read side has been checked. A check sets
    // the gauges one after another, the lag last: a scrape can fall between.
    let metrics = poll("the reactor's gauges", async || {
        let text = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("eshost_reactor_lag_events{").then_some(text)
    })
    .await;
    for line in [
        r#"eshost_reactor_position{reactor="checkout"} 9"#,
        r#"eshost_reactor_parked_events{reactor="checkout"} 1"#,
        r#"eshost_reactor_timers{reactor="checkout"} 0"#,
        r#"eshost_reactor_pending_actions{reactor="checkout"} 0"#,
        r#"eshost_reactor_lag_events{reactor="checkout"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let parked = get("/v1/reactors/checkout/parked").await;
    assert_eq!(parked[0]["position"], 7, "{parked}");
    assert_eq!(parked[0]["reason"], "missing field `buyerId`", "{parked}");
    assert_eq!(get("/v1/reactors/nobody/parked").await, json!([]));

    let none = client
        .post(server.url("/v1/reactors/checkout/retry?position=8"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    let problem: Value = none.json().await.unwrap();
    assert_eq!(
        problem["detail"], "checkout has no parked event at position 8",
        "{problem}"
    );
    let asked = client
        .post(server.url("/v1/reactors/checkout/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    assert_eq!(
        asked.json::<Value>().await.unwrap(),
        json!({"reactor": "checkout", "asked": 1})
    );
    let parked = get("/v1/reactors/checkout/parked").await;
    assert!(parked[0]["retry_requested_at_ms"].is_i64(), "{parked}");

    let bad = client
        .put(server.url("/v1/reactors/checkout/policy"))
        .json(&json!({"on_failure": "halt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let problem: Value = bad.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid_payload"),
        "{problem}"
    );
    let set = client
        .put(server.url("/v1/reactors/checkout/policy"))
        .json(&json!({"on_failure": "stop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let listed = get("/v1/reactors").await;
    assert_eq!(listed[0]["on_failure"], "stop", "{listed}");
    // The parked event is before the checkpoint: parked under `park`, so
    // the reactor is not stopped at it.
    assert!(listed[0].get("stopped_at").is_none(), "{listed}");

    // Stopped at a new parked event: listed, and a problem of the read
    // side's in /readyz.
    let refused = [Reaction {
        position: 12,
        recorded_at_ms: 1,
        event: "Order o2 OrderPlaced #1".into(),
        outcome: Err("refused".into()),
    }];
    let page = ReactionPage {
        from: 9,
        to: 11,
        reactions: &refused,
        ..page
    };
    assert!(reactions.record_reactions(&page).await.unwrap());
    assert_eq!(get("/v1/reactors").await[0]["stopped_at"], 12);
    poll("readiness to show the stopped reactor", async || {
        let ready = get("/readyz").await;
        let problems = ready["read_side"].as_array()?.clone();
        problems
            .iter()
            .any(|p| {
                p == "reactor checkout stopped at Order o2 OrderPlaced #1 (position 12): refused"
            })
            .then_some(())
    })
    .await;
    server.stop().await;
}
