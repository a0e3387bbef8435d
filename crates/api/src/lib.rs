//! The HTTP API's wire types: what the server (`eshost-server`) answers and
//! the client (`eshost-client`) reads, and the headers a command carries.
//! Nothing here knows the host; the types the API shares with the library
//! come from `eshost-core`. With the `openapi` feature (the server's) the
//! types derive their OpenAPI schemas.

use serde::{Deserialize, Serialize};

pub use eshost_core::{
    AggregateInfo, CommandOutcome, CommandRequest, ComponentKind, DeployAction, Deployment,
    ErasedStream, Erasure, JsonText, OnFailure, ProjectionRecord, RecordedEvent, RefusedVersion,
    ReloadReport,
};

/// The header carrying the command id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const CORRELATION_ID: &str = "x-correlation-id";
pub const CAUSATION_ID: &str = "x-causation-id";

/// Events one page holds when the request names no limit, and at most.
pub const DEFAULT_PAGE: u64 = 1_000;
pub const MAX_PAGE: u64 = 10_000;

/// `GET /v1/aggregates/{aggregate}/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateAnswer {
    pub aggregate: String,
    pub id: String,
    /// The sequence number of the last event the state includes; 0 for an
    /// aggregate with no events.
    pub version: u64,
    /// The state, exactly as the component rendered it (its key order
    /// kept), so a client prints what a local read prints.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub state: JsonText,
    /// The stream's newest snapshot by the component serving it, if it has
    /// one: loading the aggregate replays only the events after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
}

/// A snapshot of a stream, as [`StateAnswer`] describes it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotInfo {
    /// The sequence number of the last event it includes.
    pub version: u64,
    /// Its size: the guest's own encoding of its state.
    pub bytes: u64,
}

/// `GET /v1/views/{projection}/{key}`: one document of a projection's view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ViewDocument {
    pub projection: String,
    pub key: String,
    /// The document, as the projection wrote it.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub document: JsonText,
}

/// `GET /v1/aggregates/{aggregate}/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsPage {
    pub events: Vec<RecordedEvent>,
    /// `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// `GET /healthz`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always "ok".
    pub status: String,
}

/// `GET /readyz`: ready to take commands: the store answers and modules are
/// loaded. Lists the files the last reload could not load (the versions
/// already running keep serving).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    pub ready: bool,
    /// "ok", or why the store did not answer.
    pub store: String,
    pub aggregates: usize,
    pub load_errors: Vec<String>,
    /// What the last look at the read side found wrong (a projection
    /// stopped, the global log's horizon held), one line each. Not ready
    /// for it only when the server is started with
    /// `--ready-requires-read-side`.
    #[serde(default)]
    pub read_side: Vec<String>,
}

/// An error answer: RFC 9457 problem details, served as
/// `application/problem+json`. `kind` and `command_id` are this API's
/// own members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// The problem type: `/v1/problems/{kind}`, relative to the server,
    /// which serves what the kind means there.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The kind's meaning, the same for every occurrence.
    pub title: String,
    /// The HTTP status, repeated for whoever sees only the body.
    pub status: u16,
    /// This occurrence, in one line, for people.
    pub detail: String,
    /// Stable: clients branch on it.
    pub kind: String,
    /// The command's id, on answers to a command: resend with it
    /// (`Idempotency-Key`) wherever resending is safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The upgrade check's report, on an `upgrade_refused` problem: the
    /// streams that failed, with the event and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub check: Option<serde_json::Value>,
}

/// `GET /v1/projections`: one projection, as the store records it, with
/// its lag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionStatus {
    #[serde(flatten)]
    pub record: ProjectionRecord,
    /// Events of the types it reads not yet in its view (counted to
    /// 100,000); only for the projections this server runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// This server runs it (`eshost serve --run-projections`), so it can
    /// rebuild it.
    pub runs_here: bool,
    /// A rebuild this server started is under way.
    pub rebuilding: bool,
}

/// `PUT /v1/modules/{name}` and `POST /v1/modules/{name}/rollback`: what
/// went live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployAnswer {
    /// The deployment recorded; none when this version was live already.
    pub deployment: Option<Deployment>,
    /// The aggregate as this server now serves it (a deployment of one).
    pub aggregate: Option<AggregateInfo>,
    /// The projection now live (a deployment of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionInfo>,
    /// The reactor now live (a deployment of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactor: Option<ReactorInfo>,
    /// The upgrade check's report, when a check ran: the streams replayed,
    /// and those whose state the new version changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub check: Option<serde_json::Value>,
}

/// A projection's component, as deployed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionInfo {
    pub name: String,
    pub version: String,
    /// `sha256:` and the component's digest.
    pub digest: String,
    /// The aggregate types it reads; empty for all.
    pub reads: Vec<String>,
}

/// A reactor's component, as deployed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactorInfo {
    pub name: String,
    pub version: String,
    /// `sha256:` and the component's digest.
    pub digest: String,
    /// The aggregate types it subscribes to.
    pub reads: Vec<String>,
    /// The outbound sinks it delivers to.
    pub sinks: Vec<String>,
}

/// `GET /v1/reactors`: one reactor, as the store has it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactorStatus {
    pub name: String,
    /// The version that runs it (or ran it last).
    pub version: String,
    /// `sha256:` and its component's digest.
    pub digest: String,
    /// The last event it reacted to, or passed over.
    pub position: i64,
    /// Events of the aggregates it subscribes to after its position
    /// (counted to 100,000); only for the reactors this server runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Events it parked.
    pub parked: u64,
    /// Timers it scheduled that have not fired.
    pub timers: u64,
    /// Actions recorded and not yet performed (or to be tried again).
    pub pending: u64,
    pub on_failure: OnFailure,
    /// The parked event it stopped at, under the `stop` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
}

/// `GET /v1/reactors/{name}/parked`: an event a reactor parked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedEvent {
    pub reactor: String,
    /// Its position in the global log.
    pub position: i64,
    /// The event, for people: `Order o1 OrderPlaced #1`.
    pub event: String,
    pub reason: String,
    /// When it was parked, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// When a retry was asked for, if one is waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_requested_at_ms: Option<i64>,
}

/// `POST /v1/reactors/{name}/retry`: how many parked events wait for the
/// runner to retry them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryAnswer {
    pub reactor: String,
    pub asked: u64,
}

/// `PUT /v1/reactors/{name}/policy`: what the reactor does with an event
/// it fails.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReactorPolicy {
    pub on_failure: OnFailure,
}

/// `POST /v1/admin/forget`: who to forget. In the body, not the path, so
/// that no access log records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// The subject's id, as the guests' events hold it.
    #[cfg_attr(feature = "openapi", schema(example = "ann"))]
    pub subject: String,
}

/// `POST /v1/admin/forget`: what the forget did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForgetAnswer {
    /// False when there was nothing left to forget: no subject has this
    /// id (never recorded, or forgotten already).
    pub forgotten: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Erasure>,
}

/// The media type of a [`Problem`].
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `GET /v1/problems/{kind}`: what one error kind means.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProblemType {
    pub kind: String,
    pub status: u16,
    pub title: String,
}
