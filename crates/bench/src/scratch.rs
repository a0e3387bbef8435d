//! A scratch store for a scenario that needs a fresh one: a schema of its
//! own beside the PostgreSQL store named (or a SQLite file), dropped
//! afterwards, so the store named is never touched.

use crate::BenchError;

/// A store of its own: a PostgreSQL schema, or a SQLite file.
pub(crate) struct Scratch {
    url: String,
    drop: ScratchDrop,
}

enum ScratchDrop {
    Schema { server: String, schema: String },
    File(std::path::PathBuf),
}

impl Scratch {
    /// A fresh one beside the store `url` names.
    async fn create(url: &str) -> Result<Self, BenchError> {
        let name = format!("eshost_bench_{}", uuid::Uuid::new_v4().simple());
        if url.starts_with("sqlite:") {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            return Ok(Self {
                url: format!("sqlite://{}", path.display()),
                drop: ScratchDrop::File(path),
            });
        }
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await?;
        let separator = if url.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{url}{separator}options=-c%20search_path%3D{name}"),
            drop: ScratchDrop::Schema {
                server: url.to_string(),
                schema: name,
            },
        })
    }

    /// Runs `measure` on a fresh one beside `url` (given its URL), and
    /// drops it after, whatever `measure` gave.
    pub(crate) async fn around<T>(
        url: &str,
        measure: impl AsyncFnOnce(String) -> Result<T, BenchError>,
    ) -> Result<T, BenchError> {
        let scratch = Self::create(url).await?;
        let measured = measure(scratch.url.clone()).await;
        scratch.drop_it().await;
        measured
    }

    /// Drops it, with all it holds.
    async fn drop_it(self) {
        match self.drop {
            ScratchDrop::File(path) => {
                for suffix in ["", "-wal", "-shm", ".lock"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            ScratchDrop::Schema { server, schema } => {
                use sqlx::Connection;
                let dropped = async {
                    let mut conn = sqlx::PgConnection::connect(&server).await?;
                    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                        .execute(&mut conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                };
                if let Err(e) = dropped.await {
                    tracing::warn!(error = %e, schema, "could not drop the bench's scratch schema");
                }
            }
        }
    }
}
