//! What a reactor asks the host to do, as the host records and performs it
//! (see `wit/reactor.wit`): send a command, schedule one under a key,
//! cancel a scheduled one, deliver a message to a named sink. Each action
//! of a reaction has an id the host derives ([`action_id`]), which makes
//! performing it again harmless.
//!
//! Serialized externally tagged, as reactor specs write them:
//! `{ send = { aggregate = "FlashSaleItem", id = "s1", command =
//! "PurchaseItem", payload = { ... } } }`, `{ cancel = "expire:o1" }`.

use crate::json::JsonText;
use serde::{Deserialize, Serialize};

/// One action of a reaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send a command now.
    Send(ReactionCommand),
    /// Send a command when it is due.
    Schedule(Scheduled),
    /// Cancel the timer under this key, if there is one.
    Cancel(String),
    /// Deliver a message to a sink.
    Deliver(Delivery),
}

impl Action {
    /// Gives a command this action sends, now or later, the correlation id
    /// of the event reacted to when the reactor named none: a workflow
    /// stays correlated with no code from its author.
    pub fn inherit_correlation(&mut self, event_correlation: Option<&str>) {
        let command = match self {
            Action::Send(command) => command,
            Action::Schedule(scheduled) => &mut scheduled.command,
            Action::Cancel(_) | Action::Deliver(_) => return,
        };
        if command.correlation_id.is_none() {
            command.correlation_id = event_correlation.map(str::to_owned);
        }
    }
}

/// A command a reaction sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactionCommand {
    pub aggregate: String,
    pub id: String,
    /// The command's name.
    pub command: String,
    pub payload: JsonText,
    /// Carried into the metadata of the events the command records; none:
    /// the reacted-to event's own correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// A command to send later, under a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduled {
    /// Names the timer within its reactor: scheduling a key again replaces
    /// its timer.
    pub key: String,
    pub due: Due,
    pub command: ReactionCommand,
}

/// When a scheduled command is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Due {
    /// At this time, in milliseconds since the Unix epoch (UTC).
    AtMs(i64),
    /// This many milliseconds after the event was recorded.
    AfterMs(u64),
}

impl Due {
    /// The time it is due, in milliseconds since the Unix epoch, for an
    /// event recorded at `recorded_at_ms`.
    pub fn at(self, recorded_at_ms: i64) -> i64 {
        match self {
            Due::AtMs(at) => at,
            Due::AfterMs(after) => {
                recorded_at_ms.saturating_add(i64::try_from(after).unwrap_or(i64::MAX))
            }
        }
    }
}

/// A message for an outbound sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// One of the sinks the reactor's manifest names.
    pub sink: String,
    pub body: JsonText,
}

/// What a reactor does with an event it refuses or whose reaction fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Park the event, with the reason, and go on with the next: one bad
    /// event holds up no other.
    #[default]
    Park,
    /// Park the event and stop there, the checkpoint before it, until it
    /// is retried: for reactors whose events must be handled in order.
    Stop,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Park => "park",
            OnFailure::Stop => "stop",
        }
    }
}

impl std::str::FromStr for OnFailure {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "park" => Ok(OnFailure::Park),
            "stop" => Ok(OnFailure::Stop),
            other => Err(format!("{other:?} is not a failure policy (park or stop)")),
        }
    }
}

/// The id of action `index` of `reactor`'s reaction to the event at
/// `position`: the command id of a command it sends (or a timer fires),
/// the delivery's `Idempotency-Key`. The same for every run that reacts
/// to that event, so the host can perform an action again without effect.
pub fn action_id(reactor: &str, position: i64, index: usize) -> String {
    format!("reaction:{reactor}:{position}:{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_as_specs_write_them() {
        let actions: Vec<Action> = serde_json::from_str(
            r#"[
                {"send": {"aggregate": "FlashSaleItem", "id": "s1", "command": "PurchaseItem",
                          "payload": {"buyerId": "ann", "quantity": 1}, "correlation_id": "order:o1"}},
                {"schedule": {"key": "expire:o1", "due": {"after_ms": 900000},
                              "command": {"aggregate": "Order", "id": "o1", "command": "CancelOrder", "payload": {}}}},
                {"cancel": "expire:o1"},
                {"deliver": {"sink": "confirmations", "body": {"order": "o1"}}}
            ]"#,
        )
        .unwrap();
        assert_eq!(actions.len(), 4);
        let Action::Schedule(scheduled) = &actions[1] else {
            panic!("{actions:?}");
        };
        assert_eq!(scheduled.due.at(1_000), 901_000);
        assert_eq!(Due::AtMs(5).at(1_000), 5);
        let error = serde_json::from_str::<Action>(r#"{"sned": {}}"#).unwrap_err();
        assert!(error.to_string().contains("unknown variant"), "{error}");
    }

    #[test]
    fn a_command_named_with_no_correlation_inherits_the_event_s() {
        let command = |correlation: Option<&str>| ReactionCommand {
            aggregate: "Order".into(),
            id: "o1".into(),
            command: "ReserveOrder".into(),
            payload: JsonText::from_value(&serde_json::json!({})),
            correlation_id: correlation.map(str::to_owned),
        };
        let mut actions = vec![
            Action::Send(command(None)),
            Action::Send(command(Some("mine"))),
            Action::Schedule(Scheduled {
                key: "expire:o1".into(),
                due: Due::AfterMs(1),
                command: command(None),
            }),
            Action::Cancel("expire:o1".into()),
        ];
        for action in &mut actions {
            action.inherit_correlation(Some("order:o1"));
        }
        let correlations: Vec<Option<&str>> = actions
            .iter()
            .map(|action| match action {
                Action::Send(c) => c.correlation_id.as_deref(),
                Action::Schedule(s) => s.command.correlation_id.as_deref(),
                _ => None,
            })
            .collect();
        assert_eq!(
            correlations,
            [Some("order:o1"), Some("mine"), Some("order:o1"), None]
        );
    }

    #[test]
    fn an_event_s_recording_time_reads_as_milliseconds() {
        let mut event = crate::RecordedEvent {
            position: 1,
            aggregate: "Order".into(),
            id: "o1".into(),
            sequence: 1,
            name: "OrderPlaced".into(),
            payload: JsonText::from_value(&serde_json::json!({})),
            metadata: serde_json::json!({}),
            created_at: "2026-01-01T00:00:01.5Z".into(),
        };
        assert_eq!(event.recorded_at_ms(), Some(1_767_225_601_500));
        event.created_at = "yesterday".into();
        assert_eq!(event.recorded_at_ms(), None);
    }

    #[test]
    fn an_action_id_names_the_reactor_the_event_and_the_index() {
        assert_eq!(action_id("checkout", 1234, 0), "reaction:checkout:1234:0");
        assert_ne!(
            action_id("checkout", 1234, 0),
            action_id("checkout", 1234, 1)
        );
    }
}
