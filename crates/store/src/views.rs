//! Projections' views in the store: each projection's record (its live
//! view, version, status), each view generation's checkpoint, and the
//! documents.
//!
//! A view is built in generations. The live generation is the one readers
//! see; a rebuild fills a new generation beside it, from position 0, and
//! [`ViewStore::switch_view`] makes it live in one transaction. Readers
//! name the projection, never a generation, and each read is one
//! statement, so a reader sees one whole generation or the other.
//!
//! Every write of documents moves its generation's checkpoint from the
//! position the writer started at, in the same transaction
//! ([`ViewStore::commit_view`]): an event's changes land exactly once,
//! and a writer that lost a race learns it and starts again from the
//! checkpoint.

use crate::error::StoreError;
use async_trait::async_trait;
pub use eshost_core::{DocumentChange, JsonText, ProjectionRecord};

/// One generation of one projection's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewId {
    pub projection: String,
    pub generation: i64,
}

impl std::fmt::Display for ViewId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (generation {})", self.projection, self.generation)
    }
}

/// A row of either store's `SELECT_PROJECTIONS`.
pub(super) fn projection_from_row<R: sqlx::Row>(row: &R) -> Result<ProjectionRecord, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(ProjectionRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        generation: row.try_get("generation")?,
        position: row.try_get("position")?,
        status: row.try_get("status")?,
        error: row.try_get("error")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub use eshost_core::view::{STATUS_FAILED, STATUS_OK};

/// Is a view's checkpoint where a writer expected it?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The changes landed and the checkpoint moved.
    Yes,
    /// The checkpoint was elsewhere (another writer moved it, or the
    /// generation was replaced): nothing was written.
    Moved,
}

/// Why a rebuilt view did not become live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// It is live now; the old generation is gone.
    Done,
    /// The live view has seen events the new one has not yet: catch up and
    /// try again.
    Behind { live_position: i64 },
}

/// A visitor of a view's documents, in key order. An error (writing them
/// out failed) ends the scan with it.
pub type VisitDocument<'a> = dyn FnMut(&str, &JsonText) -> Result<(), std::io::Error> + Send + 'a;

/// Where projections keep their views. Both stores implement it.
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// Every projection the store has a record of, by name.
    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError>;

    /// The projection's record, created (generation 1, position 0, `ok`)
    /// when it has none; the version and digest are set to these.
    async fn register_projection(
        &self,
        name: &str,
        version: &str,
        digest: &str,
    ) -> Result<ProjectionRecord, StoreError>;

    /// Sets the projection's status (`ok`, or `failed` with the error).
    async fn set_projection_status(
        &self,
        name: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The position a view generation's documents include, if it exists.
    async fn view_position(&self, view: &ViewId) -> Result<Option<i64>, StoreError>;

    /// One document of one generation (for the projection that writes it).
    async fn load_document(&self, view: &ViewId, key: &str)
    -> Result<Option<JsonText>, StoreError>;

    /// Applies `changes` to the generation and moves its checkpoint from
    /// `from` to `to`, in one transaction; or, if the checkpoint is not at
    /// `from`, writes nothing and says so.
    async fn commit_view(
        &self,
        view: &ViewId,
        from: i64,
        to: i64,
        changes: &[DocumentChange],
    ) -> Result<Committed, StoreError>;

    /// Starts a rebuild: a new, empty generation at position 0, after
    /// dropping any other generation that is not live (a rebuild that did
    /// not finish).
    async fn begin_rebuild(&self, projection: &str) -> Result<ViewId, StoreError>;

    /// Makes `view` the projection's live generation, unless the live one
    /// includes events `view` does not; drops the old generation.
    async fn switch_view(&self, view: &ViewId) -> Result<Switch, StoreError>;

    /// The live view's document under `key`.
    async fn view_document(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<JsonText>, StoreError>;

    /// Every document of the live view, in key order, read in one
    /// statement (one consistent view, however large). Returns how many.
    async fn scan_view(
        &self,
        projection: &str,
        visit: &mut VisitDocument<'_>,
    ) -> Result<u64, StoreError>;

    /// How many events after `position` (of these aggregate types, or of
    /// all when empty) there are, counting at most `cap`.
    async fn events_after(
        &self,
        position: i64,
        aggregates: &[String],
        cap: u64,
    ) -> Result<u64, StoreError>;
}
