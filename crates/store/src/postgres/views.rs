//! The PostgreSQL store's projection views: registrations, generations,
//! documents and the checkpoints they move with.

use super::PostgresStore;
use crate::JsonText;
use crate::error::StoreError;
use crate::to_i64;
use crate::views::{
    Committed, DocumentChange, ProjectionRecord, Switch, ViewId, ViewStore, VisitDocument,
};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::types::Json;

const SELECT_PROJECTIONS: &str = "
    SELECT p.name, p.version, p.digest, p.generation, COALESCE(g.position, 0) AS position,
           p.status, p.error,
           to_char(p.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at
    FROM projections p
    LEFT JOIN view_generations g ON g.projection = p.name AND g.generation = p.generation";

const REGISTER_PROJECTION: &str = "
    WITH registered AS (
        INSERT INTO projections (name, generation, version, digest, status)
        VALUES ($1, 1, $2, $3, 'ok')
        ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, digest = EXCLUDED.digest
        RETURNING name, generation
    )
    INSERT INTO view_generations (projection, generation, position)
    SELECT name, generation, 0 FROM registered
    ON CONFLICT DO NOTHING";

const SET_PROJECTION_STATUS: &str = "
    UPDATE projections SET status = $2, error = $3, updated_at = now() WHERE name = $1";

const SELECT_VIEW_POSITION: &str =
    "SELECT position FROM view_generations WHERE projection = $1 AND generation = $2";

const SELECT_DOCUMENT: &str = "
    SELECT body FROM view_documents WHERE projection = $1 AND generation = $2 AND key = $3";

// Moves the checkpoint only from where the writer found it: a lost race
// updates no row, and the transaction is rolled back.
const MOVE_CHECKPOINT: &str = "
    UPDATE view_generations SET position = $4
    WHERE projection = $1 AND generation = $2 AND position = $3";

const UPSERT_DOCUMENTS: &str = "
    INSERT INTO view_documents (projection, generation, key, body)
    SELECT $1, $2, d.key, d.body::json FROM UNNEST($3::text[], $4::text[]) AS d(key, body)
    ON CONFLICT (projection, generation, key) DO UPDATE SET body = EXCLUDED.body";

const DELETE_DOCUMENTS: &str = "
    DELETE FROM view_documents WHERE projection = $1 AND generation = $2 AND key = ANY($3)";

const DROP_UNUSED_GENERATIONS: &str = "
    WITH unused AS (
        DELETE FROM view_generations g USING projections p
        WHERE g.projection = $1 AND p.name = $1 AND g.generation <> p.generation
        RETURNING g.generation
    )
    DELETE FROM view_documents WHERE projection = $1 AND generation IN (SELECT generation FROM unused)";

const NEXT_GENERATION: &str = "
    INSERT INTO view_generations (projection, generation, position)
    SELECT $1, COALESCE(MAX(generation), 0) + 1, 0 FROM view_generations WHERE projection = $1
    RETURNING generation";

const LOCK_LIVE_VIEW: &str = "
    SELECT p.generation, g.position FROM projections p
    JOIN view_generations g ON g.projection = p.name AND g.generation = p.generation
    WHERE p.name = $1
    FOR UPDATE OF p";

const SELECT_LIVE_DOCUMENT: &str = "
    SELECT d.body FROM view_documents d
    JOIN projections p ON p.name = d.projection AND p.generation = d.generation
    WHERE d.projection = $1 AND d.key = $2";

const SCAN_LIVE_VIEW: &str = "
    SELECT d.key, d.body FROM view_documents d
    JOIN projections p ON p.name = d.projection AND p.generation = d.generation
    WHERE d.projection = $1
    ORDER BY d.key";

const COUNT_EVENTS_AFTER: &str = "
    SELECT count(*) FROM (
        SELECT 1 FROM events
        WHERE position > $1 AND (cardinality($2::text[]) = 0 OR aggregate_name = ANY($2))
        LIMIT $3
    ) AS counted";

#[async_trait]
impl ViewStore for PostgresStore {
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
        sqlx::query(REGISTER_PROJECTION)
            .bind(name)
            .bind(version)
            .bind(digest)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query(&format!("{SELECT_PROJECTIONS} WHERE p.name = $1"))
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        crate::views::projection_from_row(&row)
    }

    async fn set_projection_status(
        &self,
        name: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(SET_PROJECTION_STATUS)
            .bind(name)
            .bind(status)
            .bind(error)
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
        let body: Option<Json<JsonText>> = sqlx::query_scalar(SELECT_DOCUMENT)
            .bind(&view.projection)
            .bind(view.generation)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(body.map(|b| b.0))
    }

    async fn commit_view(
        &self,
        view: &ViewId,
        from: i64,
        to: i64,
        changes: &[DocumentChange],
    ) -> Result<Committed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(MOVE_CHECKPOINT)
            .bind(&view.projection)
            .bind(view.generation)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            return Ok(Committed::Moved);
        }
        let (mut upserted_keys, mut bodies, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
        for change in changes {
            match &change.body {
                Some(body) => {
                    upserted_keys.push(change.key.as_str());
                    bodies.push(body.as_str());
                }
                None => deleted.push(change.key.as_str()),
            }
        }
        if !deleted.is_empty() {
            sqlx::query(DELETE_DOCUMENTS)
                .bind(&view.projection)
                .bind(view.generation)
                .bind(&deleted)
                .execute(&mut *tx)
                .await?;
        }
        if !upserted_keys.is_empty() {
            sqlx::query(UPSERT_DOCUMENTS)
                .bind(&view.projection)
                .bind(view.generation)
                .bind(&upserted_keys)
                .bind(&bodies)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Committed::Yes)
    }

    async fn begin_rebuild(&self, projection: &str) -> Result<ViewId, StoreError> {
        let mut tx = self.pool.begin().await?;
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
        let (live_generation, live_position): (i64, i64) = sqlx::query_as(LOCK_LIVE_VIEW)
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
        sqlx::query("UPDATE projections SET generation = $2, updated_at = now() WHERE name = $1")
            .bind(&view.projection)
            .bind(view.generation)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM view_generations WHERE projection = $1 AND generation = $2")
            .bind(&view.projection)
            .bind(live_generation)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM view_documents WHERE projection = $1 AND generation = $2")
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
        let body: Option<Json<JsonText>> = sqlx::query_scalar(SELECT_LIVE_DOCUMENT)
            .bind(projection)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(body.map(|b| b.0))
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
            let body: Json<JsonText> = row.try_get("body")?;
            visit(&key, &body.0).map_err(sqlx::Error::Io)?;
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
        let count: i64 = sqlx::query_scalar(COUNT_EVENTS_AFTER)
            .bind(position)
            .bind(aggregates)
            .bind(to_i64(cap))
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }
}
