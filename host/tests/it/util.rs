//! Shared test plumbing: the built components, a PostgreSQL schema per test,
//! hosts built on them.

use eshost::runtime::engine;
use eshost::store::PostgresStore;
use eshost::{CommandRequest, Host, Modules, RecordedEvent, RetryPolicy};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio::sync::OnceCell;

pub const FLASH_SALE: &str = "FlashSaleItem";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where `cargo xtask build-guests` puts the components.
pub fn modules_dir() -> PathBuf {
    let dir = workspace_root().join("target/modules");
    assert!(
        dir.join("flash-sale.wasm").exists(),
        "{} has no flash-sale.wasm: run the tests with `cargo xtask test`, which builds the guests first",
        dir.display()
    );
    dir
}

/// The components, compiled once per test binary (compiling is the slow part).
pub fn modules() -> Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            Modules::load_dir(&engine(), &modules_dir()).expect("loading the built guests")
        })
        .clone()
}

/// The server every test shares: DATABASE_URL when set, else one
/// testcontainers PostgreSQL for the whole test binary.
async fn server_url() -> String {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        use testcontainers_modules::postgres::Postgres;
        use testcontainers_modules::testcontainers::runners::AsyncRunner;
        let container = Postgres::default()
            .start()
            .await
            .expect("DATABASE_URL is not set and no Docker engine could start PostgreSQL");
        let port = container.get_host_port_ipv4(5432).await.unwrap();
        // Kept for the life of the test process; the testcontainers reaper removes it.
        Box::leak(Box::new(container));
        format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
    })
    .await
    .clone()
}

/// A schema of its own for one test, so tests run in parallel and rerun.
pub struct TestDb {
    /// A URL whose connections use only this test's schema.
    pub url: String,
    schema: String,
    server: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let server = server_url().await;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .expect("connecting to PostgreSQL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");
        Self {
            url,
            schema,
            server,
        }
    }

    pub async fn store(&self) -> Arc<PostgresStore> {
        Arc::new(
            PostgresStore::connect(&self.url)
                .await
                .expect("connecting the store"),
        )
    }

    /// A host with its own pool and cache, as a separate process would have.
    pub async fn host(&self, retry: RetryPolicy) -> Arc<Host> {
        Arc::new(Host::new(modules(), self.store().await, retry))
    }

    pub async fn drop_schema(self) {
        let mut conn = sqlx::PgConnection::connect(&self.server).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

pub fn create(id: &str, stock: u64) -> CommandRequest {
    CommandRequest::new(
        FLASH_SALE,
        id,
        "CreateFlashSale",
        format!(r#"{{"initialStock":{stock}}}"#),
    )
}

pub fn purchase(id: &str, buyer: &str, quantity: i64) -> CommandRequest {
    CommandRequest::new(
        FLASH_SALE,
        id,
        "PurchaseItem",
        format!(r#"{{"buyerId":"{buyer}","quantity":{quantity}}}"#),
    )
}

pub fn names(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

/// Asserts the stream's sequence numbers are exactly 1..=n.
pub fn assert_gapless(events: &[RecordedEvent]) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(sequences, expected, "stream has a gap or a duplicate");
}
