//! Projections' views: what the store records of a projection, and one
//! change a projection guest makes to its view.

use crate::json::JsonText;
use serde::{Deserialize, Serialize};

/// What the store knows of a projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionRecord {
    pub name: String,
    /// The guest version that last ran it.
    pub version: String,
    /// `sha256:` and the component file's digest.
    pub digest: String,
    /// The live view's generation: 1, then one more per rebuild.
    pub generation: i64,
    /// The position of the last event the live view includes.
    pub position: i64,
    /// `ok`, or `failed` with the error.
    pub status: String,
    /// Why it stopped: the event it stopped at and the guest's error.
    pub error: Option<String>,
    /// RFC 3339, UTC: when the status was last set.
    pub updated_at: String,
}

/// A projection's status when it runs.
pub const STATUS_OK: &str = "ok";
/// A projection's status when an event stopped it.
pub const STATUS_FAILED: &str = "failed";

/// One change to a view: the document under `key` becomes `body`, or goes
/// when `body` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentChange {
    pub key: String,
    pub body: Option<JsonText>,
}
