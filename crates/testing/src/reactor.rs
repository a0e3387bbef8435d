//! Given/then tests of a reactor guest, in the sandbox with no database:
//! given this recorded event (with its metadata), then exactly these
//! actions, in order (or the reactor refuses it with this error).
//!
//! ```toml
//! reactor = "checkout"
//!
//! [[case]]
//! name = "an item's purchase reserves the order it answers"
//! given = { aggregate = "FlashSaleItem", id = "s1", event = "ItemPurchased",
//!           payload = { buyerId = "ann", quantity = 1 },
//!           metadata = { correlationId = "order:o1" } }
//! then = [
//!   { send = { aggregate = "Order", id = "o1", command = "ReserveOrder", payload = {},
//!              correlation_id = "order:o1" } },
//! ]
//! ```
//!
//! Actions are written as the host records them ([`eshost_core::Action`]):
//! `send`, `schedule` (with `key`, `due = { after_ms = N }` or
//! `{ at_ms = N }`, and a `command`), `cancel` (a key) and `deliver` (a
//! `sink` and a `body`). The event is at position 1 and sequence 1 unless
//! it says otherwise, recorded at [`DEFAULT_RECORDED_AT`].

use super::{DEFAULT_ID, diff, empty_object};
use eshost_core::{JsonText, RecordedEvent};
use eshost_wasm::{LoadedReactor, ReactorInstance};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// When a given event was recorded, unless it says.
pub const DEFAULT_RECORDED_AT: &str = "2026-01-01T00:00:00Z";

/// A reactor under test, from Rust: given an event, then these actions.
///
/// ```ignore
/// let checkout = ReactorTest::load("target/reactors/checkout.wasm")?;
/// checkout
///     .given("FlashSaleItem", "s1", "ItemPurchased", json!({"buyerId": "ann", "quantity": 1}))
///     .with_metadata(json!({"correlationId": "order:o1"}))
///     .then_expect_actions(json!([{"send": {"aggregate": "Order", "id": "o1", ...}}]));
/// ```
pub struct ReactorTest {
    component: Arc<LoadedReactor>,
}

impl ReactorTest {
    /// Loads a reactor component with the default sandbox limits.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self, eshost_wasm::LoadError> {
        Ok(Self::new(Arc::new(
            eshost_wasm::Runtime::new().load_reactor(path.as_ref())?,
        )))
    }

    pub fn new(component: Arc<LoadedReactor>) -> Self {
        Self { component }
    }

    /// The event the reactor meets: `event` of aggregate `aggregate` `id`.
    pub fn given(
        &self,
        aggregate: &str,
        id: &str,
        event: &str,
        payload: Value,
    ) -> GivenReaction<'_> {
        GivenReaction {
            test: self,
            event: GivenEvent {
                aggregate: Some(aggregate.into()),
                id: Some(id.into()),
                event: event.into(),
                payload,
                metadata: empty_object(),
                position: None,
                sequence: None,
                recorded_at: None,
            },
        }
    }
}

/// An event about to be reacted to.
pub struct GivenReaction<'a> {
    test: &'a ReactorTest,
    event: GivenEvent,
}

impl GivenReaction<'_> {
    /// The event's metadata (`correlationId`, ...).
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.event.metadata = metadata;
        self
    }

    /// Checks that the reaction is exactly `actions` (a JSON array, written
    /// as specs write them); panics with a diff if not.
    pub fn then_expect_actions(self, actions: Value) {
        let Value::Array(actions) = actions else {
            panic!("the expected actions are a JSON array");
        };
        self.check(Some(actions), None);
    }

    /// Checks that the reactor refuses the event with an error containing
    /// `text`; panics if not.
    pub fn then_expect_refusal(self, text: &str) {
        self.check(None, Some(text.into()));
    }

    fn check(self, then: Option<Vec<Value>>, error: Option<String>) {
        let case = ReactorCase {
            name: String::new(),
            given: self.event,
            then,
            error,
        };
        if let Some(failure) = run_reactor_case(&self.test.component, &case) {
            panic!("{failure}");
        }
    }
}

/// One reactor spec file: cases against one reactor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorSpecFile {
    /// The reactor, found among the loaded reactors.
    pub reactor: String,
    #[serde(rename = "case", default)]
    pub cases: Vec<ReactorCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorCase {
    pub name: String,
    pub given: GivenEvent,
    /// The actions, in order.
    pub then: Option<Vec<Value>>,
    /// Text the reactor's refusal must contain.
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenEvent {
    /// The aggregate type [default: the one the reactor subscribes to].
    pub aggregate: Option<String>,
    /// The aggregate id [default: test-1].
    pub id: Option<String>,
    pub event: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    pub position: Option<i64>,
    pub sequence: Option<u64>,
    /// RFC 3339 [default: [`DEFAULT_RECORDED_AT`]].
    pub recorded_at: Option<String>,
}

impl ReactorSpecFile {
    /// Parses and checks a reactor spec file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: Self = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if spec.cases.is_empty() {
            return Err("no cases: add at least one [[case]]".into());
        }
        for case in &spec.cases {
            if case.then.is_some() == case.error.is_some() {
                return Err(format!(
                    "case {:?}: give `then` (the actions) or `error`, one of them",
                    case.name
                ));
            }
        }
        Ok(spec)
    }
}

/// Runs one case; `None` if it passed, else a readable explanation with a diff.
pub fn run_reactor_case(component: &Arc<LoadedReactor>, case: &ReactorCase) -> Option<String> {
    let event = match recorded(component, &case.given) {
        Ok(event) => event,
        Err(why) => return Some(why),
    };
    let mut instance = match ReactorInstance::new(component.clone()) {
        Ok(instance) => instance,
        Err(e) => return Some(format!("the guest failed to start: {e}")),
    };
    let reacted = instance.react(&event);
    match (&case.then, &case.error, reacted) {
        (_, Some(expected), Err(refusal)) => {
            let refusal = refusal.to_string();
            (!refusal.contains(expected.as_str()))
                .then(|| format!("expected a refusal containing {expected:?}, got: {refusal}"))
        }
        (_, Some(expected), Ok(actions)) => Some(format!(
            "expected a refusal containing {expected:?}, got {} action(s)",
            actions.len()
        )),
        (_, None, Err(refusal)) => Some(format!("the reactor refused the event: {refusal}")),
        (Some(expected), None, Ok(actions)) => {
            let actual = serde_json::to_value(&actions).unwrap_or_default();
            let expected = Value::Array(expected.clone());
            (expected != actual).then(|| {
                let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
                format!(
                    "actions differ (- expected, + actual):\n{}",
                    diff(&pretty(&expected), &pretty(&actual))
                )
            })
        }
        (None, None, Ok(_)) => None,
    }
}

/// The given event as the store would hand it over.
fn recorded(component: &LoadedReactor, given: &GivenEvent) -> Result<RecordedEvent, String> {
    let aggregates = component.aggregates();
    let aggregate = match (&given.aggregate, aggregates.as_slice()) {
        (Some(aggregate), _) => aggregate.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(format!(
                "the given event ({}) names no aggregate, and {} subscribes to more than one type",
                given.event, component.name
            ));
        }
    };
    if !component.receives(&aggregate, &given.event) {
        return Err(format!(
            "{} does not subscribe to {aggregate} {}: the host would never give it this event",
            component.name, given.event
        ));
    }
    Ok(RecordedEvent {
        position: given.position.unwrap_or(1),
        aggregate,
        id: given.id.clone().unwrap_or_else(|| DEFAULT_ID.to_string()),
        sequence: given.sequence.unwrap_or(1),
        name: given.event.clone(),
        payload: JsonText::from_value(&given.payload),
        metadata: given.metadata.clone(),
        created_at: given
            .recorded_at
            .clone()
            .unwrap_or_else(|| DEFAULT_RECORDED_AT.to_string()),
    })
}
