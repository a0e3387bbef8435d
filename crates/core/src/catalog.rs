//! What a host has loaded, as `eshost aggregates` and `GET /v1/aggregates`
//! show it, and what a reload of its modules directory changed.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a loaded aggregate is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AggregateInfo {
    pub name: String,
    pub version: String,
    /// `sha256:` and the component file's digest.
    pub digest: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub file: PathBuf,
    pub commands: Vec<String>,
    /// In name order.
    pub events: Vec<String>,
    /// Old event names the component still applies (upcasts) but never
    /// returns, in name order (contract 0.2.0).
    #[serde(default)]
    pub old_events: Vec<String>,
    /// The version of the aggregate contract the component implements:
    /// `0.1.0` or `0.2.0`.
    #[serde(default)]
    pub contract: String,
    /// A newer file for this aggregate that the server refused to switch
    /// in (the upgrade check failed): the version above keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedVersion>,
}

/// A component found for an aggregate and not switched in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedVersion {
    pub version: String,
    /// `sha256:` and the refused file's digest.
    pub digest: String,
    /// Why, in one line: the upgrade check's report.
    pub reason: String,
}

/// What a reload did, by aggregate: `Name version (file)` lines, and one
/// line per file that could not be loaded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReloadReport {
    pub added: Vec<String>,
    /// `Name old-version -> new-version (file)`: a new component digest.
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Files not loaded; the versions already running keep serving.
    pub errors: Vec<String>,
}

impl ReloadReport {
    /// True if the set of components differs from before.
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty())
    }
}
