//! Idempotent commands. Every command has an id (the caller's, or a new
//! UUID), recorded with its events under a unique key in the append's
//! transaction. A repeat is answered with the outcome first recorded, and
//! appends nothing. It is caught either at the append (the key is taken) or,
//! when the repeat now decides to record nothing (a refusal, say), by a
//! lookup before answering. Only caller-supplied ids are looked up: a fresh
//! UUID cannot be a repeat.

use super::admit::Admitted;
use super::records::Records;
use super::{Answer, CommandOutcome};
use crate::error::{CommandError, StoreError};
use eshost_store::RecordedCommand;
use std::collections::HashMap;
use tracing::info;

impl Records {
    /// The recorded answers for these commands, by command id. Commands never
    /// recorded are left out.
    pub(super) async fn recorded_answers(
        &self,
        commands: &[&Admitted],
    ) -> Result<HashMap<String, Answer>, StoreError> {
        if commands.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<&str> = commands.iter().map(|c| c.command_id.as_str()).collect();
        let recorded = self
            .patiently("find commands", || self.store.streams().find_commands(&ids))
            .await?;
        Ok(recorded
            .into_iter()
            .filter_map(|recorded| {
                let command = commands
                    .iter()
                    .find(|c| c.command_id.as_str() == recorded.command_id)?;
                Some((recorded.command_id.clone(), replay(command, recorded)))
            })
            .collect())
    }

    /// The answers to give for commands decided now: each as decided, except
    /// a command that recorded nothing this time (a refusal, or no events)
    /// whose caller-chosen id shows it was recorded before: that one gets its
    /// recorded outcome. All looked up in one query.
    pub(super) async fn unless_recorded(&self, decided: Vec<(&Admitted, Answer)>) -> Vec<Answer> {
        let records_nothing = |answer: &Answer| match answer {
            Ok(outcome) => outcome.events.is_empty(),
            Err(error) => matches!(error, CommandError::Refused { .. }),
        };
        let candidate: Vec<bool> = decided
            .iter()
            .map(|(command, answer)| command.command_id.is_chosen() && records_nothing(answer))
            .collect();
        let maybe_repeats: Vec<&Admitted> = decided
            .iter()
            .zip(&candidate)
            .filter(|(_, candidate)| **candidate)
            .map(|((command, _), _)| *command)
            .collect();
        let mut recorded = self
            .recorded_answers(&maybe_repeats)
            .await
            .map_err(CommandError::from);
        decided
            .into_iter()
            .zip(candidate)
            .map(|((command, answer), candidate)| {
                if !candidate {
                    return answer;
                }
                match &mut recorded {
                    Ok(found) => found.remove(command.command_id.as_str()).unwrap_or(answer),
                    Err(e) => Err(e.clone()),
                }
            })
            .collect()
    }
}

/// The answer a repeat of `recorded` gets: its outcome, if the repeat is the
/// same command on the same aggregate; otherwise the id was reused.
fn replay(command: &Admitted, recorded: RecordedCommand) -> Answer {
    if recorded.stream != command.stream
        || recorded.name != command.command
        || !same_payload(&recorded.fingerprint, command)
    {
        // Who used it, for the operator only: the caller may not be them.
        info!(
            command_id = %recorded.command_id,
            recorded = %format_args!("{} on {}", recorded.name, recorded.stream),
            "command id reused for a different command"
        );
        return Err(CommandError::CommandIdReused {
            command_id: recorded.command_id,
        });
    }
    info!(command_id = %recorded.command_id, "repeated command: answering with the recorded outcome");
    Ok(CommandOutcome {
        command_id: recorded.command_id,
        events: recorded.events,
        retries: 0,
        replayed: true,
    })
}

/// True if a command recorded under `recorded` had `command`'s payload, as
/// far as can be told: the fingerprints match; or a forget cleared the
/// recorded one (decision record 0056), and the name and stream are
/// all there is to go by; or it was recorded plain, before its aggregate
/// declared personal data and its fingerprints were keyed.
fn same_payload(recorded: &str, command: &Admitted) -> bool {
    recorded == command.fingerprint
        || recorded == eshost_core::command::FORGOTTEN_FINGERPRINT
        || recorded == eshost_core::command::fingerprint(&command.command, &command.payload)
}
