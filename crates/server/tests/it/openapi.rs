//! The OpenAPI document at `/v1/openapi.json`: it lists every route the
//! server has, and schemathesis (property-based, from PyPI) finds no answer
//! that breaks it and no undocumented server error.

use crate::util::*;
use eshost::wasm::Runtime;
use eshost_server::{App, ServerConfig};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// `GET /v1/events`, Server-Sent Events without end.
const FOLLOW: &str = "/v1/events";

/// Every route the router serves, as the document must list it.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/aggregates/{aggregate}/{id}/commands/{command}"),
    ("get", "/v1/aggregates"),
    ("get", "/v1/aggregates/{aggregate}/{id}"),
    ("get", "/v1/aggregates/{aggregate}/{id}/events"),
    ("get", "/v1/events"),
    ("get", "/v1/views/{projection}/{key}"),
    ("post", "/v1/admin/reload"),
    ("post", "/v1/admin/forget"),
    ("put", "/v1/modules/{name}"),
    ("post", "/v1/modules/{name}/rollback"),
    ("get", "/v1/modules/{name}/history"),
    ("get", "/v1/stats"),
    ("get", "/v1/projections"),
    ("post", "/v1/projections/{name}/rebuild"),
    ("put", "/v1/projections/{name}"),
    ("post", "/v1/projections/{name}/rollback"),
    ("get", "/v1/projections/{name}/history"),
    ("get", "/v1/reactors"),
    ("get", "/v1/reactors/{name}/parked"),
    ("post", "/v1/reactors/{name}/retry"),
    ("put", "/v1/reactors/{name}/policy"),
    ("put", "/v1/reactors/{name}"),
    ("post", "/v1/reactors/{name}/rollback"),
    ("get", "/v1/reactors/{name}/history"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/problems/{kind}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

async fn server_on(db: &TestDb) -> TestServer {
    let host = db.default_host().await;
    // A sale for the documented examples to find.
    host.execute(&create("sku-1", 1_000)).await.unwrap();
    let app = App::new(host, ServerConfig::default()).with_reloader(Runtime::new(), modules_dir());
    TestServer::start_app(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_lists_every_route_and_its_errors() {
    let db = TestDb::sqlite().await;
    let server = server_on(&db).await;
    let document: Value = reqwest::get(server.url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(paths.len(), ROUTES.len(), "{:?}", paths.keys());
    for (method, path) in ROUTES {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path} documents no success"
        );
        for status in ["401", "403"] {
            let error = &responses[status]["content"];
            assert!(
                error["application/problem+json"].is_object(),
                "{method} {path}: {status} as problem details: {error}"
            );
        }
    }
    // The path parameters name what is loaded.
    let parameters = document["paths"][ROUTES[0].1]["post"]["parameters"]
        .as_array()
        .unwrap();
    let enum_of = |name: &str| {
        parameters.iter().find(|p| p["name"] == name).unwrap()["schema"]["enum"].clone()
    };
    assert!(
        enum_of("aggregate")
            .as_array()
            .unwrap()
            .contains(&Value::from(FLASH_SALE)),
        "{parameters:?}"
    );
    assert!(
        enum_of("command")
            .as_array()
            .unwrap()
            .contains(&Value::from("PurchaseItem")),
        "{parameters:?}"
    );
    // Every error kind a command can answer has its status documented.
    let command = &document["paths"][ROUTES[0].1]["post"]["responses"];
    for (kind, status, _) in eshost_server::error::KINDS {
        if matches!(*kind, "forbidden" | "not_found" | "method_not_allowed") {
            continue; // not answers to a command on its own route
        }
        assert!(
            command.get(status.to_string()).is_some(),
            "{kind} ({status}) is not documented on the command route"
        );
    }
    server.stop().await;
}

/// schemathesis' executable: `ESHOST_SCHEMATHESIS` (set by `cargo xtask
/// test`, which installs it), else `schemathesis` on the PATH.
fn schemathesis() -> PathBuf {
    std::env::var_os("ESHOST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("schemathesis"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_failure() {
    let db = TestDb::postgres().await;
    let server = server_on(&db).await;
    let report = tempfile::tempdir().unwrap();
    let junit = report.path().join("junit.xml");
    let mut run = Command::new(schemathesis());
    run.arg("run")
        .arg(server.url("/v1/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "100",
            "--seed",
            "20261128",
            // The event log's stream never ends; its own tests cover it.
            "--exclude-path",
            FOLLOW,
            "--workers",
            "2",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&junit)
        .current_dir(report.path());
    let output = tokio::task::spawn_blocking(move || run.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (cargo xtask test installs it; or pip install schemathesis)",
                schemathesis().display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "Test cases:\n  N generated, N passed": every case passed every check.
    let counts = stdout
        .split("Test cases:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no test case count in:\n{stdout}"));
    assert!(counts >= 500, "only {counts} test cases ran");
    assert!(
        stdout.contains(&format!("{counts} generated, {counts} passed")),
        "{stdout}"
    );
    // Every documented operation was exercised (schemathesis reads the
    // document itself rather than testing it as an operation).
    let junit = std::fs::read_to_string(&junit).unwrap();
    let tested = |path: &&str| *path != "/v1/openapi.json" && *path != FOLLOW;
    for (method, path) in ROUTES.iter().filter(|(_, p)| tested(p)) {
        let name = format!("{} {path}", method.to_uppercase());
        assert!(junit.contains(&name), "{name} was not exercised:\n{junit}");
    }
    server.stop().await;
    db.cleanup().await;
}
