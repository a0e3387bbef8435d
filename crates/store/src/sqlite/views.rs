//! The SQLite store's projection views: registrations, generations,
//! documents and the checkpoints they move with.

use super::SqliteStore;
use crate::JsonText;
use crate::error::StoreError;
use crate::to_i64;
use crate::views::{
    Committed, DocumentChange, ProjectionRecord, Switch, ViewId, ViewStore, VisitDocument,
};
use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite};

const SELECT_PROJECTIONS: &str = "
    SELECT p.name, p.version, p.digest, p.generation, COALESCE(g.position, 0) AS position,
           p.status, p.error, p.updated_at
    FROM projections p
    LEFT JOIN view_generations g ON g.projection = p.name AND g.generation = p.generation";

const INSERT_PROJECTION: &str = "
    INSERT INTO projections (name, generation, version, digest, status)
    VALUES (?, 1, ?, ?, 'ok')
    ON CONFLICT (name) DO UPDATE SET version = excluded.version, digest = excluded.digest";

const INSERT_FIRST_GENERATION: &str = "
    INSERT INTO view_generations (projection, generation, position)
    SELECT name, generation, 0 FROM projections WHERE name = ?
    ON CONFLICT DO NOTHING";

const SET_PROJECTION_STATUS: &str = "
    UPDATE projections SET status = ?, error = ?,
           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE name = ?";

const SELECT_VIEW_POSITION: &str =
    "SELECT position FROM view_generations WHERE projection = ? AND generation = ?";

const SELECT_DOCUMENT: &str =
    "SELECT body FROM view_documents WHERE projection = ? AND generation = ? AND key = ?";

// Moves the checkpoint only from where the writer found it: a lost race
// updates no row, and the transaction is rolled back.
const MOVE_CHECKPOINT: &str = "
    UPDATE view_generations SET position = ?
    WHERE projection = ? AND generation = ? AND position = ?";

const UPSERT_DOCUMENT: &str = "
    INSERT INTO view_documents (projection, generation, key, body) VALUES (?, ?, ?, ?)
    ON CONFLICT (projection, generation, key) DO UPDATE SET body = excluded.body";

const DELETE_DOCUMENT: &str =
    "DELETE FROM view_documents WHERE projection = ? AND generation = ? AND key = ?";

const DROP_UNUSED_DOCUMENTS: &str = "
    DELETE FROM view_documents WHERE projection = ?1
    AND generation <> (SELECT generation FROM projections WHERE name = ?1)";

const DROP_UNUSED_GENERATIONS: &str = "
    DELETE FROM view_generations WHERE projection = ?1
    AND generation <> (SELECT generation FROM projections WHERE name = ?1)";

const NEXT_GENERATION: &str = "
    INSERT INTO view_generations (projection, generation, position)
    SELECT ?1, COALESCE(MAX(generation), 0) + 1, 0 FROM view_generations WHERE projection = ?1
    RETURNING generation";

const SELECT_LIVE_VIEW: &str = "
    SELECT p.generation, g.position FROM projections p
    JOIN view_generations g ON g.projection = p.name AND g.generation = p.generation
    WHERE p.name = ?";

const SELECT_LIVE_DOCUMENT: &str = "
    SELECT d.body FROM view_documents d
    JOIN projections p ON p.name = d.projection AND p.generation = d.generation
    WHERE d.projection = ? AND d.key = ?";

const SCAN_LIVE_VIEW: &str = "
    SELECT d.key, d.body FROM view_documents d
    JOIN projections p ON p.name = d.projection AND p.generation = d.generation
    WHERE d.projection = ?
    ORDER BY d.key";

/// A document's body as stored: checked JSON text, written by a projection.
fn document_body(body: String) -> Result<JsonText, StoreError> {
    JsonText::new(body).map_err(|e| StoreError::from(sqlx::Error::Decode(e.into())))
}

#[async_trait]
impl ViewStore for SqliteStore {
    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT_PROJECTIONS} ORDER BY p.name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(crate::views::projection_from_row).collect()
    }

    async fn register_projection(
        &self,
        name: &str,
        version: &str,
        digest: &str,
    ) -> Result<ProjectionRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_PROJECTION)
            .bind(name)
            .bind(version)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_FIRST_GENERATION)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("{SELECT_PROJECTIONS} WHERE p.name = ?"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        crate::views::projection_from_row(&row)
    }

    async fn set_projection_status(
        &self,
        name: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(SET_PROJECTION_STATUS)
            .bind(status)
            .bind(error)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn view_position(&self, view: &ViewId) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(SELECT_VIEW_POSITION)
            .bind(&view.projection)
            .bind(view.generation)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn load_document(
        &self,
        view: &ViewId,
        key: &str,
    ) -> Result<Option<JsonText>, StoreError> {
        let body: Option<String> = sqlx::query_scalar(SELECT_DOCUMENT)
            .bind(&view.projection)
            .bind(view.generation)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        body.map(document_body).transpose()
    }

    async fn commit_view(
        &self,
        view: &ViewId,
        from: i64,
        to: i64,
        changes: &[DocumentChange],
    ) -> Result<Committed, StoreError> {
        // The first statement writes, so the transaction holds the write
        // lock from its start.
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(MOVE_CHECKPOINT)
            .bind(to)
            .bind(&view.projection)
            .bind(view.generation)
            .bind(from)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            return Ok(Committed::Moved);
        }
        for change in changes {
            let statement = match &change.body {
                Some(body) => sqlx::query(UPSERT_DOCUMENT)
                    .bind(&view.projection)
                    .bind(view.generation)
                    .bind(&change.key)
                    .bind(body.as_str()),
                None => sqlx::query(DELETE_DOCUMENT)
                    .bind(&view.projection)
                    .bind(view.generation)
                    .bind(&change.key),
            };
            statement.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Committed::Yes)
    }

    async fn begin_rebuild(&self, projection: &str) -> Result<ViewId, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(DROP_UNUSED_DOCUMENTS)
            .bind(projection)
            .execute(&mut *tx)
            .await?;
        sqlx::query(DROP_UNUSED_GENERATIONS)
            .bind(projection)
            .execute(&mut *tx)
            .await?;
        let generation: i64 = sqlx::query_scalar(NEXT_GENERATION)
            .bind(projection)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ViewId {
            projection: projection.to_string(),
            generation,
        })
    }

    async fn switch_view(&self, view: &ViewId) -> Result<Switch, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first, so the transaction holds the write lock before it
        // reads what it decides on.
        sqlx::query("UPDATE projections SET updated_at = updated_at WHERE name = ?")
            .bind(&view.projection)
            .execute(&mut *tx)
            .await?;
        let (live_generation, live_position): (i64, i64) = sqlx::query_as(SELECT_LIVE_VIEW)
            .bind(&view.projection)
            .fetch_one(&mut *tx)
            .await?;
        let position: i64 = sqlx::query_scalar(SELECT_VIEW_POSITION)
            .bind(&view.projection)
            .bind(view.generation)
            .fetch_one(&mut *tx)
            .await?;
        if position < live_position {
            return Ok(Switch::Behind { live_position });
        }
        sqlx::query(
            "UPDATE projections SET generation = ?,
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE name = ?",
        )
        .bind(view.generation)
        .bind(&view.projection)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM view_generations WHERE projection = ? AND generation = ?")
            .bind(&view.projection)
            .bind(live_generation)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM view_documents WHERE projection = ? AND generation = ?")
            .bind(&view.projection)
            .bind(live_generation)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Switch::Done)
    }

    async fn view_document(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<JsonText>, StoreError> {
        let body: Option<String> = sqlx::query_scalar(SELECT_LIVE_DOCUMENT)
            .bind(projection)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        body.map(document_body).transpose()
    }

    async fn scan_view(
        &self,
        projection: &str,
        visit: &mut VisitDocument<'_>,
    ) -> Result<u64, StoreError> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query(SCAN_LIVE_VIEW)
            .bind(projection)
            .fetch(&self.pool);
        let mut count = 0;
        while let Some(row) = rows.try_next().await? {
            let key: String = row.try_get("key")?;
            let body = document_body(row.try_get("body")?)?;
            visit(&key, &body).map_err(sqlx::Error::Io)?;
            count += 1;
        }
        Ok(count)
    }

    async fn events_after(
        &self,
        position: i64,
        aggregates: &[String],
        cap: u64,
    ) -> Result<u64, StoreError> {
        let mut count = QueryBuilder::<Sqlite>::new(
            "SELECT count(*) FROM (SELECT 1 FROM events WHERE position > ",
        );
        count.push_bind(position);
        if !aggregates.is_empty() {
            count.push(" AND aggregate_name IN (");
            let mut names = count.separated(", ");
            for aggregate in aggregates {
                names.push_bind(aggregate);
            }
            count.push(")");
        }
        count.push(" LIMIT ").push_bind(to_i64(cap)).push(")");
        let counted: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(counted.max(0) as u64)
    }
}
