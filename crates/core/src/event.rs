//! Events as the store holds them, and snapshots of guest state.

use crate::json::JsonText;
use serde::{Deserialize, Serialize};

/// An event as the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordedEvent {
    /// Global position: unique, increasing across all streams in the order
    /// readers of the global log see events; sparse, not a count.
    pub position: i64,
    pub aggregate: String,
    pub id: String,
    /// 1-based, gapless within the stream.
    pub sequence: u64,
    pub name: String,
    /// The payload, exactly as the guest wrote it.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub payload: JsonText,
    pub metadata: serde_json::Value,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// The metadata field that holds the W3C `traceparent` of the command
/// that recorded an event, when that command was traced: whoever handles
/// the event (a projection, the relay) continues its trace.
pub const TRACEPARENT: &str = "traceparent";

/// The metadata field that holds the correlation id of the command that
/// recorded an event: given by its caller, else the command's own id.
pub const CORRELATION_ID: &str = "correlationId";

impl RecordedEvent {
    /// The `traceparent` of the command that recorded this event, if it was
    /// traced (see [`TRACEPARENT`]).
    pub fn traceparent(&self) -> Option<&str> {
        self.metadata.get(TRACEPARENT)?.as_str()
    }

    /// The correlation id of the command that recorded this event (see
    /// [`CORRELATION_ID`]).
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.get(CORRELATION_ID)?.as_str()
    }

    /// When it was recorded, in milliseconds since the Unix epoch; `None`
    /// if `created_at` is not RFC 3339.
    pub fn recorded_at_ms(&self) -> Option<i64> {
        let at = time::OffsetDateTime::parse(
            &self.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
    }
}

/// Now, in milliseconds since the Unix epoch: the clock
/// [`RecordedEvent::recorded_at_ms`], timers and the store's records count
/// in (0 before 1970, which no clock this runs on shows).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Guest state as of one version of a stream, written by one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The sequence number of the last event the state includes.
    pub version: u64,
    /// Bytes the guest's `snapshot` produced and its `restore` accepts.
    pub state: Vec<u8>,
}
