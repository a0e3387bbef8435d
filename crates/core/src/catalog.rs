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
    /// `0.1.0`, `0.2.0` or `0.3.0`.
    #[serde(default)]
    pub contract: String,
    /// The events that hold personal data, and where (contract 0.3.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<PersonalEvent>,
    /// A newer file for this aggregate that the server refused to switch
    /// in (the upgrade check failed): the version above keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedVersion>,
}

/// One event's personal data, as its guest declares it: top-level fields
/// of its payload (decision record 0056).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonalEvent {
    /// The event's name.
    pub event: String,
    /// The field that holds the data subject's id (a string), which is
    /// personal data itself.
    pub subject: String,
    /// The other fields that hold the subject's personal data.
    #[serde(default)]
    pub fields: Vec<String>,
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

/// What kind of guest a deployment carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    Aggregate,
    Projection,
    Reactor,
}

impl ComponentKind {
    /// The name the store records.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Aggregate => "aggregate",
            ComponentKind::Projection => "projection",
            ComponentKind::Reactor => "reactor",
        }
    }

    /// The kind the store recorded under `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "aggregate" => Some(ComponentKind::Aggregate),
            "projection" => Some(ComponentKind::Projection),
            "reactor" => Some(ComponentKind::Reactor),
            _ => None,
        }
    }
}

/// What a deployment did. Every action but `refused` makes its version
/// the live one for its name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    /// Found in a host's modules directory and passed the upgrade check.
    Seeded,
    /// Deployed by a client (`PUT /v1/modules/{name}`) and passed the check.
    Deployed,
    /// An earlier version brought back.
    RolledBack,
    /// Failed the upgrade check: never loaded, never checked again.
    Refused,
}

impl DeployAction {
    /// The name the store records.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployAction::Seeded => "seeded",
            DeployAction::Deployed => "deployed",
            DeployAction::RolledBack => "rolled_back",
            DeployAction::Refused => "refused",
        }
    }

    /// The action the store recorded under `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            DeployAction::Seeded,
            DeployAction::Deployed,
            DeployAction::RolledBack,
            DeployAction::Refused,
        ]
        .into_iter()
        .find(|action| action.as_str() == name)
    }

    /// Whether this action makes its version the live one.
    pub fn goes_live(self) -> bool {
        self != DeployAction::Refused
    }
}

/// One entry of the deployment history the store keeps: which version of
/// which guest went live (or was refused), when, and by whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    /// Increases with every entry.
    pub id: i64,
    pub kind: ComponentKind,
    /// The aggregate's (or projection's) name, from the component's manifest.
    pub name: String,
    pub version: String,
    /// `sha256:` and the component's digest.
    pub digest: String,
    pub action: DeployAction,
    /// Why it was refused: the upgrade check's report, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The name of the token that deployed it; none for a version seeded
    /// from a modules directory, or a server without tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When, in RFC 3339 (UTC).
    pub at: String,
}

/// A component's digest as the API and the deployment history show it:
/// `sha256:` and the hex digest.
pub fn digest_label(hex: &str) -> String {
    format!("sha256:{hex}")
}
