//! A command addressed to one aggregate instance, and what it did.

use crate::event::RecordedEvent;
use serde::{Deserialize, Serialize};

/// A command's id: the caller's, or a new UUID. This is the one place ids
/// are made, when the request is: whoever sends a command knows its id
/// before anything can fail, and an answer that never arrives can be
/// learnt by sending the command again under the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandId {
    id: String,
    /// The caller named it, so the command may be a repeat. A new UUID
    /// cannot be, which saves looking it up.
    chosen: bool,
}

impl CommandId {
    /// A new id (a random UUID).
    pub fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            chosen: false,
        }
    }

    /// The caller's id, as given.
    pub fn chosen(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            chosen: true,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// True if the caller named the id (see [`CommandId::chosen`]).
    pub fn is_chosen(&self) -> bool {
        self.chosen
    }
}

impl Default for CommandId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// A command addressed to one aggregate instance.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub aggregate: String,
    pub id: String,
    pub command: String,
    /// JSON text.
    pub payload: String,
    /// Identifies this command: a new UUID unless the caller chose one
    /// ([`CommandRequest::with_command_id`]). A command sent again with the
    /// same id is answered with the outcome first recorded.
    pub command_id: CommandId,
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
            command_id: CommandId::new(),
            correlation_id: None,
            causation_id: None,
        }
    }

    /// The same request under the caller's id, if it gives one (an
    /// `Idempotency-Key`, a `--command-id`); else under its new one.
    pub fn with_command_id(mut self, id: Option<String>) -> Self {
        if let Some(id) = id {
            self.command_id = CommandId::chosen(id);
        }
        self
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

/// The fingerprint a forget leaves in place of a command's (decision
/// record 0056): a repeat of the command is still answered with what it
/// recorded, and nothing is left to check a guess at its payload against.
pub const FORGOTTEN_FINGERPRINT: &str = "forgotten";

/// sha256 (hex) of a command's name and payload text, a NUL between them:
/// what tells a repeat of a command from another command that reuses its
/// id.
pub fn fingerprint(name: &str, payload: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(payload.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    /// Fingerprints are stored with every command and compared with the
    /// next one under the same id: their input must never change.
    #[test]
    fn a_fingerprint_is_the_sha256_of_name_nul_payload() {
        assert_eq!(
            fingerprint("PurchaseItem", r#"{"buyerId":"ann","quantity":1}"#),
            "7fdae15a2b1a8333d2cee59bf5a8b49ab3381cbca551424a7fcb0f1b2db77866"
        );
    }
}
