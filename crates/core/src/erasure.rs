//! The erasure of a data subject (decision record 0056): the event a
//! forget records in the global log, so that every reader of the log
//! (projections, reactors, the relay, other hosts' caches) learns of it.

use crate::stream::StreamId;
use serde::{Deserialize, Serialize};

/// The aggregate type of the host's own erasure streams, one per forgotten
/// subject (`$subjects/PSEUDONYM`). Names starting with `$` are the host's:
/// no guest may take one.
pub const SUBJECTS_AGGREGATE: &str = "$subjects";

/// The name of the erasure event.
pub const SUBJECT_FORGOTTEN: &str = "SubjectForgotten";

/// The command id a subject's erasure is recorded under: a forget run
/// again after an interruption finds it recorded.
pub fn forget_command_id(pseudonym: &str) -> String {
    format!("forget:{pseudonym}")
}

/// The erasure event's payload: who was forgotten (as their pseudonym,
/// which is all that is left of them) and the streams they appeared in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectForgotten {
    /// The pseudonym that stood for the subject in stored payloads.
    pub subject: String,
    /// The streams the subject's personal data appeared in.
    pub streams: Vec<ErasedStream>,
}

/// A stream named in an erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErasedStream {
    pub aggregate: String,
    pub id: String,
}

impl From<&StreamId> for ErasedStream {
    fn from(stream: &StreamId) -> Self {
        Self {
            aggregate: stream.aggregate.clone(),
            id: stream.id.clone(),
        }
    }
}

impl From<&ErasedStream> for StreamId {
    fn from(stream: &ErasedStream) -> Self {
        StreamId::new(&stream.aggregate, &stream.id)
    }
}

/// What a forget did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// The pseudonym that stood for the subject.
    pub pseudonym: String,
    /// The streams the subject appeared in; their cached states are
    /// dropped, and their snapshots deleted.
    pub streams: Vec<ErasedStream>,
    /// Snapshots deleted.
    pub snapshots_deleted: u64,
    /// False when an earlier, interrupted forget had recorded the erasure
    /// event already and this one finished it.
    pub recorded_now: bool,
}
