//! A database of its own for each test (a PostgreSQL schema or a SQLite
//! file), and PostgreSQL in the states a test needs: a table locked, a
//! transaction holding the log's horizon, a role out of connections.

use crate::modules;
use eshost::{Concurrency, Host, RetryPolicy};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

/// The server every test shares: `DATABASE_URL`. Each test makes a schema
/// of its own in it.
fn server_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need a server, as in \
             `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo xtask test`"
        ),
    }
}

/// A database of its own for one test, so tests run in parallel and rerun.
pub struct TestDb {
    /// The store URL: a PostgreSQL URL whose connections see only this test's
    /// schema, or a SQLite file in a temporary directory.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    PostgresSchema { server: String, schema: String },
    SqliteDir(#[allow(dead_code)] tempfile::TempDir),
}

impl TestDb {
    pub async fn postgres() -> Self {
        let server = server_url();
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
            cleanup: Cleanup::PostgresSchema { server, schema },
        }
    }

    /// This test's PostgreSQL schema, where its store's tables are.
    pub fn schema(&self) -> Option<&str> {
        match &self.cleanup {
            Cleanup::PostgresSchema { schema, .. } => Some(schema),
            Cleanup::SqliteDir(_) => None,
        }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        Self {
            url,
            cleanup: Cleanup::SqliteDir(dir),
        }
    }

    /// An optimistic host with its own pool and cache, as a separate process
    /// would have.
    pub async fn host(&self, retry: RetryPolicy) -> Arc<Host> {
        self.host_in(Concurrency::Optimistic, retry).await
    }

    /// A host in the given mode, with its own pool and cache.
    pub async fn host_in(&self, mode: Concurrency, retry: RetryPolicy) -> Arc<Host> {
        let store = eshost::store::open(&self.url)
            .await
            .expect("opening the store");
        Arc::new(Host::with_concurrency(modules(), store, retry, mode))
    }

    /// A host of the checkout sample's aggregates (see
    /// [`crate::checkout_dir`]), with the default options.
    pub async fn checkout_host(&self) -> Host {
        let store = eshost::store::open(&self.url)
            .await
            .expect("opening the store");
        let modules = eshost::wasm::Runtime::new()
            .load_dir(&crate::checkout_dir())
            .expect("loading the checkout's guests");
        Host::with_options(modules, store, eshost::HostOptions::default())
    }

    /// A host with the default options (queued), with its own pool and cache.
    pub async fn default_host(&self) -> Host {
        let store = eshost::store::open(&self.url)
            .await
            .expect("opening the store");
        Host::with_options(modules(), store, eshost::HostOptions::default())
    }

    /// Applies the store's migrations up to and including `version`, as a
    /// build of eshost from before the later ones left the store.
    pub async fn migrate_to(&self, version: i64) {
        let kind = if self.url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../store/migrations")
            .join(kind);
        let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
        let older: Vec<_> = migrator
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect();
        migrator.migrations = older.into();
        match kind {
            "postgres" => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                migrator.run(&mut conn).await.unwrap();
            }
            _ => migrator
                .run(&mut self.sqlite_connection().await)
                .await
                .unwrap(),
        }
    }

    /// Runs `sql` in this test's database, PostgreSQL or SQLite: to set up
    /// what an older build wrote.
    pub async fn execute(&self, sql: &str) {
        if self.url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = self.sqlite_connection().await;
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    }

    async fn sqlite_connection(&self) -> sqlx::SqliteConnection {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)
            .unwrap()
            .create_if_missing(true);
        sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap()
    }

    /// Runs `sql` in this test's PostgreSQL schema: to break the store on
    /// purpose. Panics on SQLite.
    pub async fn execute_postgres(&self, sql: &str) {
        assert!(self.url.starts_with("postgres"), "not a PostgreSQL TestDb");
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }

    /// Locks `table` of this test's PostgreSQL schema against every other
    /// session, reads included, until the guard is dropped: a store that
    /// does not answer.
    pub async fn lock_postgres_table(&self, table: &str) -> HeldLock {
        assert!(self.url.starts_with("postgres"), "not a PostgreSQL TestDb");
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut conn)
            .await
            .unwrap();
        HeldLock(conn)
    }

    /// A transaction that has written (it has a transaction id) and stays
    /// open until the returned value is dropped: it holds the global
    /// log's horizon. Also its backend's pid.
    pub async fn hold_transaction(&self) -> (HeldLock, i32) {
        assert!(self.url.starts_with("postgres"), "not a PostgreSQL TestDb");
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        // Taking a transaction id is what holds the horizon.
        let (_, pid): (bool, i32) =
            sqlx::query_as("SELECT pg_current_xact_id() IS NOT NULL, pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        (HeldLock(conn), pid)
    }

    pub async fn cleanup(self) {
        if let Cleanup::PostgresSchema { server, schema } = &self.cleanup {
            let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A PostgreSQL database whose one role may hold only a few connections,
/// so a test can take them all: a store whose server refuses the host
/// more connections ("too many connections", 53300). Role limits do not
/// bind superusers, hence a role of its own.
pub struct CrowdedPostgres {
    /// The host's URL: the limited role, on the database it owns.
    pub url: String,
    server: String,
    name: String,
    held: Vec<sqlx::PgConnection>,
}

impl CrowdedPostgres {
    /// A new role allowed `limit` connections, and a database it owns.
    pub async fn new(limit: u32) -> Self {
        use std::str::FromStr;
        let server = server_url();
        let name = format!("crowded_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        for sql in [
            format!("CREATE ROLE {name} LOGIN CONNECTION LIMIT {limit}"),
            format!("CREATE DATABASE {name} OWNER {name}"),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        let options = sqlx::postgres::PgConnectOptions::from_str(&server).unwrap();
        let url = format!(
            "postgres://{name}@{}:{}/{name}",
            options.get_host(),
            options.get_port()
        );
        Self {
            url,
            server,
            name,
            held: Vec::new(),
        }
    }

    /// Takes every connection the role has left and ends the others'
    /// (the host's), until the host holds none and can get none: a host
    /// reconnects into the places its ended connections leave, so it is
    /// done again until nothing moves.
    pub async fn crowd_out(&mut self) {
        let mut admin = sqlx::PgConnection::connect(&self.server).await.unwrap();
        for _ in 0..100 {
            while let Ok(conn) = sqlx::PgConnection::connect(&self.url).await {
                self.held.push(conn);
            }
            let mut ours = Vec::new();
            for conn in &mut self.held {
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                ours.push(pid);
            }
            let others: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE usename = $1 AND NOT pid = ANY($2)",
            )
            .bind(&self.name)
            .bind(&ours)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            if others == 0 {
                return;
            }
            // Ended backends leave their places as they exit.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the host kept a connection of its own");
    }

    /// Gives the connections back.
    pub fn make_room(&mut self) {
        self.held.clear();
    }
}

/// The role and its database are dropped even when the test panics (a
/// role outlives its test's process, and a leaked one would be found by
/// the next run's `pg_stat_activity` queries). Drop cannot await, so the
/// statements run on a thread with a runtime of their own.
impl Drop for CrowdedPostgres {
    fn drop(&mut self) {
        self.held.clear();
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&server).await?;
                for sql in [
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("DROP ROLE IF EXISTS {name}"),
                ] {
                    sqlx::query(&sql).execute(&mut admin).await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the crowded role {}: {e}", self.name);
        }
    }
}

/// A table lock held by an open transaction (see
/// [`TestDb::lock_postgres_table`]); dropping it closes the connection,
/// which ends the transaction.
pub struct HeldLock(#[allow(dead_code)] sqlx::PgConnection);
