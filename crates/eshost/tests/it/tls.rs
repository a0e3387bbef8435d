//! PostgreSQL over TLS: `sslmode=require` encrypts the store's connections,
//! and `verify-full` checks the server's certificate against `sslrootcert`
//! (or the system's roots), as managed databases ask. Without `sslmode`, a
//! loopback server is reached in the clear.
//!
//! The local server must have `ssl = on` (Debian's PostgreSQL does, with its
//! self-signed "snakeoil" certificate for `localhost`).

use crate::util::*;
use eshost::{Host, HostOptions};
use sqlx::Connection;

/// The test database's URL plus `params`, and a plain connection to the server.
async fn with_params(db: &TestDb, params: &str) -> (String, sqlx::PgConnection) {
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}{params}", db.url);
    let mut plain = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert_eq!(ssl, "on", "these tests need a PostgreSQL with ssl = on");
    (url, plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_every_store_connection() {
    let db = TestDb::postgres().await;
    let name = format!("eshost-tls-{}", uuid::Uuid::new_v4().simple());
    let (url, mut plain) =
        with_params(&db, &format!("sslmode=require&application_name={name}")).await;

    let store = eshost::store::open(&url).await.expect("opening over TLS");
    let host = Host::with_options(modules(), store, HostOptions::default());
    host.execute(&create("tls-1", 3)).await.unwrap();
    host.execute(&purchase("tls-1", "ann", 1)).await.unwrap();

    let (encrypted, clear): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = $1",
    )
    .bind(&name)
    .fetch_one(&mut plain)
    .await
    .unwrap();
    assert!(
        encrypted >= 1,
        "the store holds at least one TLS connection"
    );
    assert_eq!(clear, 0, "and none in the clear");
    assert_eq!(host.state(FLASH_SALE, "tls-1").await.unwrap()["stock"], 2);
    drop(host);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_certificate_and_the_name() {
    let db = TestDb::postgres().await;
    assert!(
        db.url.contains("@127.0.0.1:"),
        "this test reaches the server by name and by address: DATABASE_URL must use 127.0.0.1"
    );
    let (_, mut plain) = with_params(&db, "").await;
    let certificate: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    let by_name = |url: String| url.replacen("@127.0.0.1:", "@localhost:", 1);
    // The server's own (self-signed, for `localhost`) certificate as the
    // root, reached by that name: verified.
    let (trusted, _) = with_params(
        &db,
        &format!("sslmode=verify-full&sslrootcert={certificate}"),
    )
    .await;
    let store = eshost::store::open(&by_name(trusted.clone()))
        .await
        .expect("the certificate verifies against itself as the root");
    let host = Host::with_options(modules(), store, HostOptions::default());
    host.execute(&create("tls-2", 1)).await.unwrap();

    // The same root, reached by an address the certificate does not name.
    let error = match eshost::store::open(&trusted).await {
        Ok(_) => panic!("verify-full let a server through under a name its certificate lacks"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("not valid for name"), "{error}");
    assert!(!error.contains('\n'), "{error}");

    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_without_sslmode_is_plain() {
    let db = TestDb::postgres().await;
    assert!(
        !db.url.contains("sslmode="),
        "DATABASE_URL names an sslmode"
    );
    let name = format!("eshost-plain-{}", uuid::Uuid::new_v4().simple());
    let (url, mut plain) = with_params(&db, &format!("application_name={name}")).await;
    let store = eshost::store::open(&url).await.unwrap();
    let host = Host::with_options(modules(), store, HostOptions::default());
    host.execute(&create("plain-1", 1)).await.unwrap();
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = $1 AND s.ssl",
    )
    .bind(&name)
    .fetch_one(&mut plain)
    .await
    .unwrap();
    assert_eq!(
        encrypted, 0,
        "TLS over loopback costs CPU and protects nothing"
    );
    drop(host);
    db.cleanup().await;
}
