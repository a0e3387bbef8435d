//! The keys of personal data (decision record 0056): one row per data
//! subject, with their key wrapped by a master key; the events that hold
//! a subject's data name their pseudonym (`NewEvent::subject`), which is
//! how a forget finds their streams. Everything here is opaque bytes to the store: the
//! cryptography is `eshost-personal`'s, and no key the store holds opens
//! anything without the master key, which it never sees.

use crate::{StoreError, StreamId};
use async_trait::async_trait;

/// A key of the whole store, wrapped by the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub wrapped_key: Vec<u8>,
    /// The id of the master key that wrapped it.
    pub master_key_id: String,
}

/// A data subject's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKey {
    /// What stands for the subject in stored payloads; random.
    pub pseudonym: String,
    /// Finds the row from the subject's id (a keyed hash of it).
    pub lookup: Vec<u8>,
    /// The subject's data key, wrapped by the master key.
    pub wrapped_key: Vec<u8>,
    /// The subject's id, sealed under their data key.
    pub sealed_subject: Vec<u8>,
    /// The id of the master key that wrapped `wrapped_key`.
    pub master_key_id: String,
}

/// New subjects' rows, stored with an append (see
/// [`Streams::append_group_with_subjects`](crate::Streams::append_group_with_subjects)).
#[derive(Debug, Clone, Copy, Default)]
pub struct NewSubjects<'a> {
    pub candidates: &'a [SubjectKey],
}

impl NewSubjects<'_> {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }
}

/// The keys of personal data.
#[async_trait]
pub trait Subjects: Send + Sync {
    /// The store's key `name`: the one stored, or `candidate` once stored
    /// when there was none (the first writer's key wins).
    async fn keep_key(&self, name: &str, candidate: &WrappedKey) -> Result<WrappedKey, StoreError>;

    /// Stores the candidates no row has the lookup of yet and returns each
    /// candidate's row: the new one, or the one stored before.
    async fn resolve_subjects(
        &self,
        candidates: &[SubjectKey],
    ) -> Result<Vec<SubjectKey>, StoreError>;

    /// The rows of these pseudonyms that exist, in no particular order (a
    /// forgotten subject has none).
    async fn subject_keys(&self, pseudonyms: &[&str]) -> Result<Vec<SubjectKey>, StoreError>;

    /// Up to `limit` rows whose key is wrapped by a master key other than
    /// `master_key_id`, with pseudonyms after `after`, in pseudonym order.
    async fn wrapped_by_others(
        &self,
        master_key_id: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<SubjectKey>, StoreError>;

    /// The store's keys, by name.
    async fn kept_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError>;

    /// The row whose lookup is this, if there is one.
    async fn find_subject(&self, lookup: &[u8]) -> Result<Option<SubjectKey>, StoreError>;

    /// The streams with events that name the subject with this pseudonym,
    /// in order.
    async fn subject_streams(&self, pseudonym: &str) -> Result<Vec<StreamId>, StoreError>;

    /// Forgets a subject, in one transaction: deletes the snapshots of the
    /// streams with events that name them, clears the fingerprints of the
    /// commands that recorded those events, and deletes their row (and with
    /// it their only key), and stores `replaced` store keys in place of
    /// those of their names. Returns the snapshots deleted; a subject with
    /// no row is nothing to delete.
    async fn delete_subject(
        &self,
        pseudonym: &str,
        replaced: &[(String, WrappedKey)],
    ) -> Result<u64, StoreError>;

    /// Writes these keys as rewrapped, in one transaction: each subject's
    /// `wrapped_key` and `master_key_id` by pseudonym, each store key by
    /// name. Returns the rows written.
    async fn rewrap(
        &self,
        subjects: &[SubjectKey],
        kept: &[(String, WrappedKey)],
    ) -> Result<u64, StoreError>;
}

/// Reads a `subjects` row.
pub(crate) fn subject_key<R: sqlx::Row>(row: &R) -> Result<SubjectKey, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(SubjectKey {
        pseudonym: row.try_get("pseudonym")?,
        lookup: row.try_get("lookup")?,
        wrapped_key: row.try_get("wrapped_key")?,
        sealed_subject: row.try_get("sealed_subject")?,
        master_key_id: row.try_get("master_key_id")?,
    })
}

/// Implements [`Subjects`] for a store with a `pool` field (the SQL is the
/// same on PostgreSQL and SQLite).
macro_rules! impl_subjects {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Stores new subjects' rows on `conn`, inside the caller's
            /// transaction: a candidate whose lookup is
            /// stored already is [`StoreError::SubjectTaken`](crate::StoreError::SubjectTaken).
            pub(crate) async fn insert_subjects(
                conn: &mut <$db as sqlx::Database>::Connection,
                subjects: &$crate::subjects::NewSubjects<'_>,
            ) -> Result<(), $crate::StoreError> {
                use $crate::reactions::sql::ROWS_PER_STATEMENT;
                for chunk in subjects.candidates.chunks(ROWS_PER_STATEMENT) {
                    match Self::subject_rows(chunk).build().execute(&mut *conn).await {
                        Ok(_) => {}
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Err($crate::StoreError::SubjectTaken);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }

            /// `INSERT INTO subjects` of these rows.
            fn subject_rows(
                rows: &[$crate::subjects::SubjectKey],
            ) -> sqlx::QueryBuilder<'_, $db> {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO subjects \
                     (pseudonym, lookup, wrapped_key, sealed_subject, master_key_id) ",
                );
                insert.push_values(rows, |mut row, subject| {
                    row.push_bind(&subject.pseudonym)
                        .push_bind(&subject.lookup)
                        .push_bind(&subject.wrapped_key)
                        .push_bind(&subject.sealed_subject)
                        .push_bind(&subject.master_key_id);
                });
                insert
            }
        }

        #[async_trait::async_trait]
        impl $crate::subjects::Subjects for $store {
            async fn keep_key(
                &self,
                name: &str,
                candidate: &$crate::subjects::WrappedKey,
            ) -> Result<$crate::subjects::WrappedKey, $crate::StoreError> {
                use sqlx::Row;
                sqlx::query(
                    "INSERT INTO personal_keys (name, wrapped_key, master_key_id) \
                     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(&candidate.wrapped_key)
                .bind(&candidate.master_key_id)
                .execute(&self.pool)
                .await?;
                let row = sqlx::query(
                    "SELECT wrapped_key, master_key_id FROM personal_keys WHERE name = $1",
                )
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::subjects::WrappedKey {
                    wrapped_key: row.try_get("wrapped_key")?,
                    master_key_id: row.try_get("master_key_id")?,
                })
            }

            async fn resolve_subjects(
                &self,
                candidates: &[$crate::subjects::SubjectKey],
            ) -> Result<Vec<$crate::subjects::SubjectKey>, $crate::StoreError> {
                use $crate::reactions::sql::ROWS_PER_STATEMENT;
                let mut tx = self.pool.begin().await?;
                let mut rows = Vec::with_capacity(candidates.len());
                for chunk in candidates.chunks(ROWS_PER_STATEMENT) {
                    let mut upsert = Self::subject_rows(chunk);
                    // A no-op update, so that RETURNING gives the row stored
                    // before as well as a new one.
                    upsert.push(
                        " ON CONFLICT (lookup) DO UPDATE SET lookup = excluded.lookup \
                         RETURNING pseudonym, lookup, wrapped_key, sealed_subject, master_key_id",
                    );
                    for row in upsert.build().fetch_all(&mut *tx).await? {
                        rows.push($crate::subjects::subject_key(&row)?);
                    }
                }
                tx.commit().await?;
                Ok(rows)
            }

            async fn subject_keys(
                &self,
                pseudonyms: &[&str],
            ) -> Result<Vec<$crate::subjects::SubjectKey>, $crate::StoreError> {
                use $crate::reactions::sql::ROWS_PER_STATEMENT;
                let mut keys = Vec::with_capacity(pseudonyms.len());
                for chunk in pseudonyms.chunks(ROWS_PER_STATEMENT) {
                    let mut select = sqlx::QueryBuilder::<$db>::new(
                        "SELECT pseudonym, lookup, wrapped_key, sealed_subject, master_key_id \
                         FROM subjects WHERE pseudonym IN (",
                    );
                    let mut listed = select.separated(", ");
                    for pseudonym in chunk {
                        listed.push_bind(*pseudonym);
                    }
                    listed.push_unseparated(")");
                    for row in select.build().fetch_all(&self.pool).await? {
                        keys.push($crate::subjects::subject_key(&row)?);
                    }
                }
                Ok(keys)
            }

            async fn wrapped_by_others(
                &self,
                master_key_id: &str,
                after: &str,
                limit: u64,
            ) -> Result<Vec<$crate::subjects::SubjectKey>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT pseudonym, lookup, wrapped_key, sealed_subject, master_key_id \
                     FROM subjects WHERE master_key_id <> $1 AND pseudonym > $2 \
                     ORDER BY pseudonym LIMIT $3",
                )
                .bind(master_key_id)
                .bind(after)
                .bind($crate::to_i64(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map($crate::subjects::subject_key).collect()
            }

            async fn kept_keys(
                &self,
            ) -> Result<Vec<(String, $crate::subjects::WrappedKey)>, $crate::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT name, wrapped_key, master_key_id FROM personal_keys ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get("name")?,
                            $crate::subjects::WrappedKey {
                                wrapped_key: row.try_get("wrapped_key")?,
                                master_key_id: row.try_get("master_key_id")?,
                            },
                        ))
                    })
                    .collect()
            }

            async fn find_subject(
                &self,
                lookup: &[u8],
            ) -> Result<Option<$crate::subjects::SubjectKey>, $crate::StoreError> {
                let row = sqlx::query(
                    "SELECT pseudonym, lookup, wrapped_key, sealed_subject, master_key_id \
                     FROM subjects WHERE lookup = $1",
                )
                .bind(lookup)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map($crate::subjects::subject_key).transpose()
            }

            async fn subject_streams(
                &self,
                pseudonym: &str,
            ) -> Result<Vec<$crate::StreamId>, $crate::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT DISTINCT aggregate_name, aggregate_id FROM events \
                     WHERE subject = $1 ORDER BY aggregate_name, aggregate_id",
                )
                .bind(pseudonym)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::StreamId::new(
                            row.try_get::<String, _>("aggregate_name")?,
                            row.try_get::<String, _>("aggregate_id")?,
                        ))
                    })
                    .collect()
            }

            async fn delete_subject(
                &self,
                pseudonym: &str,
                replaced: &[(String, $crate::subjects::WrappedKey)],
            ) -> Result<u64, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                for (name, key) in replaced {
                    sqlx::query(
                        "INSERT INTO personal_keys (name, wrapped_key, master_key_id) \
                         VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
                         SET wrapped_key = excluded.wrapped_key, \
                         master_key_id = excluded.master_key_id",
                    )
                    .bind(name)
                    .bind(&key.wrapped_key)
                    .bind(&key.master_key_id)
                    .execute(&mut *tx)
                    .await?;
                }
                let snapshots = sqlx::query(
                    "DELETE FROM snapshots WHERE EXISTS (SELECT 1 FROM events e \
                     WHERE e.subject = $1 AND e.aggregate_name = snapshots.aggregate_name \
                     AND e.aggregate_id = snapshots.aggregate_id)",
                )
                .bind(pseudonym)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Each event's metadata names the command that recorded it.
                sqlx::query(
                    "UPDATE commands SET fingerprint = $2 WHERE command_id IN \
                     (SELECT metadata ->> 'commandId' FROM events WHERE subject = $1)",
                )
                .bind(pseudonym)
                .bind(eshost_core::command::FORGOTTEN_FINGERPRINT)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM subjects WHERE pseudonym = $1")
                    .bind(pseudonym)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.after_forget().await?;
                Ok(snapshots)
            }

            async fn rewrap(
                &self,
                subjects: &[$crate::subjects::SubjectKey],
                kept: &[(String, $crate::subjects::WrappedKey)],
            ) -> Result<u64, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut written = 0;
                for subject in subjects {
                    written += sqlx::query(
                        "UPDATE subjects SET wrapped_key = $1, master_key_id = $2 \
                         WHERE pseudonym = $3",
                    )
                    .bind(&subject.wrapped_key)
                    .bind(&subject.master_key_id)
                    .bind(&subject.pseudonym)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                for (name, key) in kept {
                    written += sqlx::query(
                        "UPDATE personal_keys SET wrapped_key = $1, master_key_id = $2 \
                         WHERE name = $3",
                    )
                    .bind(&key.wrapped_key)
                    .bind(&key.master_key_id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(written)
            }
        }
    };
}
pub(crate) use impl_subjects;
