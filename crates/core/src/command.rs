//! A command addressed to one aggregate instance, and what it did.

use crate::event::RecordedEvent;
use serde::{Deserialize, Serialize};

/// A command addressed to one aggregate instance.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub aggregate: String,
    pub id: String,
    pub command: String,
    /// JSON text.
    pub payload: String,
    /// Identifies this command; generated when absent. A command sent again
    /// with the same id is answered with the outcome first recorded.
    pub command_id: Option<String>,
    /// The conversation this command belongs to; defaults to the command id.
    pub correlation_id: Option<String>,
    /// What caused this command; defaults to the command id.
    pub causation_id: Option<String>,
}

impl CommandRequest {
    pub fn new(
        aggregate: impl Into<String>,
        id: impl Into<String>,
        command: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            aggregate: aggregate.into(),
            id: id.into(),
            command: command.into(),
            payload: payload.into(),
            command_id: None,
            correlation_id: None,
            causation_id: None,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandOutcome {
    pub command_id: String,
    /// The events appended, with their sequence numbers. May be empty.
    pub events: Vec<RecordedEvent>,
    /// How many times a conflict sent the command round again.
    pub retries: u32,
    /// True if the command id was already recorded: `events` are the ones
    /// first appended, and nothing was appended now.
    pub replayed: bool,
}
