//! Given/when/then tests of guest logic, run in the same sandbox as
//! production and with no database: given these recorded events, when this
//! command, then these events (or this error), and optionally this state.
//!
//! Two ways in:
//! - Rust, for a guest author's `cargo test`:
//!   ```ignore
//!   let guest = GuestTest::load("target/modules/flash-sale.wasm")?;
//!   guest
//!       .given(&[("FlashSaleCreated", json!({"itemId": "s1", "initialStock": 1}))])
//!       .when("PurchaseItem", json!({"buyerId": "b", "quantity": 2}))
//!       .then_expect_events(&[("PurchaseRejected", json!({"buyerId": "b", "reason": "insufficient_stock"}))]);
//!   ```
//! - Spec files for `eshost test` (TOML, see [`SpecFile`] and the book's Testing guests).
//!
//! Projections have spec files of their own ([`projection`]): given these
//! events, then these documents; so do reactors ([`reactor`]): given this
//! event, then these actions.

pub mod projection;
pub mod reactor;

pub use reactor::ReactorTest;

use eshost_core::{JsonText, RecordedEvent};
use eshost_wasm::{Hydrated, LoadError, LoadedComponent, Refusal, Runtime};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// The aggregate id a case runs against unless it names one.
pub const DEFAULT_ID: &str = "test-1";

/// A component under test.
pub struct GuestTest {
    component: Arc<LoadedComponent>,
    id: String,
}

impl GuestTest {
    /// Loads a component with the default sandbox limits.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        Ok(Self::new(Arc::new(Runtime::new().load(path.as_ref())?)))
    }

    pub fn new(component: Arc<LoadedComponent>) -> Self {
        Self {
            component,
            id: DEFAULT_ID.to_string(),
        }
    }

    /// Runs cases against aggregate `id` instead of [`DEFAULT_ID`].
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// The history the command meets.
    pub fn given(&self, events: &[(&str, Value)]) -> Given<'_> {
        Given {
            test: self,
            events: events
                .iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
        }
    }
}

pub struct Given<'a> {
    test: &'a GuestTest,
    events: Vec<(String, Value)>,
}

impl Given<'_> {
    /// Runs the command in a fresh instance hydrated with the given events.
    pub fn when(self, command: &str, payload: Value) -> Outcome {
        run(
            &self.test.component,
            &self.test.id,
            &self.events,
            command,
            &payload.to_string(),
        )
    }
}

/// What a command did in the sandbox.
#[derive(Debug)]
pub struct Outcome {
    /// The events decided, or why the command failed.
    pub result: Result<Vec<(String, Value)>, OutcomeError>,
    /// The state after applying the decided events (absent if the run failed).
    pub state: Option<Value>,
}

/// Why a command produced no events.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeError {
    /// The guest refused it; `kind` is the WIT `command-error` case name
    /// (`unknown-command`, `invalid-payload`, `invalid-command`, `precondition-failed`).
    Refused { kind: String, message: String },
    /// The guest trapped, broke a limit or the contract, or the given events
    /// did not apply.
    Failed(String),
}

impl std::fmt::Display for OutcomeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { kind, message } => write!(f, "{kind}: {message}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
        }
    }
}

fn refusal_kind(refusal: &Refusal) -> (&'static str, &str) {
    match refusal {
        Refusal::UnknownCommand(m) => ("unknown-command", m),
        Refusal::InvalidPayload(m) => ("invalid-payload", m),
        Refusal::InvalidCommand(m) => ("invalid-command", m),
        Refusal::PreconditionFailed(m) => ("precondition-failed", m),
    }
}

fn run(
    component: &Arc<LoadedComponent>,
    id: &str,
    given: &[(String, Value)],
    command: &str,
    payload: &str,
) -> Outcome {
    let failed = |e: &dyn std::fmt::Display| Outcome {
        result: Err(OutcomeError::Failed(e.to_string())),
        state: None,
    };
    let mut instance = match Hydrated::new(component.clone(), id) {
        Ok(instance) => instance,
        Err(e) => return failed(&e),
    };
    let history: Vec<RecordedEvent> = given
        .iter()
        .enumerate()
        .map(|(n, (name, payload))| RecordedEvent {
            position: n as i64 + 1,
            aggregate: component.name.clone(),
            id: id.to_string(),
            sequence: n as u64 + 1,
            name: name.clone(),
            payload: JsonText::from_value(payload),
            // Given events are taken as recorded by the version under test.
            metadata: serde_json::json!({ "aggregateVersion": component.version }),
            created_at: String::new(),
        })
        .collect();
    if let Err(e) = instance.apply_recorded(&history) {
        return failed(&format!("the given events did not apply: {e}"));
    }
    let decided = match instance.decide(command, payload) {
        Ok(Ok(events)) => events,
        Ok(Err(refusal)) => {
            let (kind, message) = refusal_kind(&refusal);
            return Outcome {
                result: Err(OutcomeError::Refused {
                    kind: kind.to_string(),
                    message: message.to_string(),
                }),
                state: instance
                    .to_json()
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok()),
            };
        }
        Err(e) => return failed(&e),
    };
    if let Err(e) = instance.apply_decided(&decided) {
        return failed(&e);
    }
    let events = decided
        .into_iter()
        .map(|e| {
            // check_event guaranteed JSON; Null is unreachable in practice.
            let payload = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
            (e.name, payload)
        })
        .collect();
    Outcome {
        result: Ok(events),
        state: instance
            .to_json()
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok()),
    }
}

impl Outcome {
    /// Panics with a diff unless the command produced exactly these events.
    pub fn then_expect_events(&self, expected: &[(&str, Value)]) -> &Self {
        let expected: Vec<(String, Value)> = expected
            .iter()
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect();
        if let Some(failure) = check(self, &Expectation::Events(expected)) {
            panic!("{failure}");
        }
        self
    }

    /// Panics unless the command was refused with this kind of error.
    pub fn then_expect_error(&self, kind: &str) -> &Self {
        if let Some(failure) = check(self, &Expectation::Error(kind.to_string())) {
            panic!("{failure}");
        }
        self
    }

    /// Panics unless every field of `expected` equals the state's.
    pub fn then_expect_state(&self, expected: Value) -> &Self {
        if let Some(failure) = check_state(self, &expected) {
            panic!("{failure}");
        }
        self
    }
}

/// One spec file: cases against one aggregate.
///
/// ```toml
/// aggregate = "FlashSaleItem"
///
/// [[case]]
/// name = "a purchase within stock is recorded"
/// given = [{ event = "FlashSaleCreated", payload = { itemId = "test-1", initialStock = 5 } }]
/// when = { command = "PurchaseItem", payload = { buyerId = "b1", quantity = 2 } }
/// then = [{ event = "ItemPurchased", payload = { buyerId = "b1", quantity = 2 } }]
/// state = { stock = 3, sold = 2 }
///
/// [[case]]
/// name = "quantity 0 is refused"
/// given = [{ event = "FlashSaleCreated", payload = { itemId = "test-1", initialStock = 5 } }]
/// when = { command = "PurchaseItem", payload = { buyerId = "b1", quantity = 0 } }
/// error = "invalid-command"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// The aggregate, found among the loaded modules.
    pub aggregate: String,
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The aggregate id [default: test-1].
    pub id: Option<String>,
    #[serde(default)]
    pub given: Vec<EventSpec>,
    pub when: CommandSpec,
    /// The events expected, in order (exactly these).
    pub then: Option<Vec<EventSpec>>,
    /// The refusal expected: `unknown-command`, `invalid-payload`,
    /// `invalid-command` or `precondition-failed`.
    pub error: Option<String>,
    /// Fields the state must have afterwards (others are not compared).
    pub state: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub event: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub command: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
}

pub(crate) fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The refusal kinds a case's `error` may name (the WIT `command-error` cases).
pub const ERROR_KINDS: &[&str] = &[
    "unknown-command",
    "invalid-payload",
    "invalid-command",
    "precondition-failed",
];

/// Spec files that could not be used (unreadable, malformed, or naming an
/// aggregate that is not loaded); each was reported as it was met.
#[derive(Debug, thiserror::Error)]
#[error("{broken} of {files} spec files could not be used (see above)")]
pub struct SpecErrors {
    pub broken: usize,
    pub files: usize,
}

impl SpecFile {
    /// Parses and checks a spec file. The error may span several lines (a
    /// TOML error points at the line and column).
    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: Self = toml::from_str(text).map_err(|e| {
            let message = e.to_string().trim_end().to_string();
            // `[case]` is one table where a list of them is wanted.
            if message.contains("expected a sequence") && message.contains("case") {
                format!(
                    "{message}\nhint: write each case as [[case]] (a list of tables), not [case]"
                )
            } else {
                message
            }
        })?;
        if spec.cases.is_empty() {
            return Err("no cases: add at least one [[case]]".into());
        }
        for case in &spec.cases {
            if let Some(kind) = case.error.as_deref().filter(|k| !ERROR_KINDS.contains(k)) {
                return Err(format!(
                    "case {:?}: unknown error kind {kind:?} (known: {})",
                    case.name,
                    ERROR_KINDS.join(", ")
                ));
            }
            match (&case.then, &case.error) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "case {:?}: give `then` or `error`, not both",
                        case.name
                    ));
                }
                (None, None) if case.state.is_none() => {
                    return Err(format!(
                        "case {:?}: expects nothing (give `then`, `error` or `state`)",
                        case.name
                    ));
                }
                _ => {}
            }
        }
        Ok(spec)
    }
}

enum Expectation {
    Events(Vec<(String, Value)>),
    Error(String),
}

/// Runs one case; `None` if it passed, else a readable explanation with a diff.
pub fn run_case(component: &Arc<LoadedComponent>, case: &Case) -> Option<String> {
    // The host refuses a command the guest does not declare before the
    // guest sees it: a case sending one tests nothing the host would run,
    // whatever it expects. Most often it is a typo.
    if !component.commands.contains(&case.when.command) {
        return Some(format!(
            "{} does not declare the command {} (it declares {}); the host refuses it before the guest runs",
            component.name,
            case.when.command,
            component.commands.join(", ")
        ));
    }
    let given: Vec<(String, Value)> = case
        .given
        .iter()
        .map(|e| (e.event.clone(), e.payload.clone()))
        .collect();
    let id = case.id.as_deref().unwrap_or(DEFAULT_ID);
    let outcome = run(
        component,
        id,
        &given,
        &case.when.command,
        &case.when.payload.to_string(),
    );
    let expectation = match (&case.then, &case.error) {
        (Some(events), _) => Some(Expectation::Events(
            events
                .iter()
                .map(|e| (e.event.clone(), e.payload.clone()))
                .collect(),
        )),
        (None, Some(kind)) => Some(Expectation::Error(kind.clone())),
        (None, None) => None,
    };
    let mut failures = Vec::new();
    if let Some(expectation) = expectation {
        failures.extend(check(&outcome, &expectation));
    } else if let Err(e) = &outcome.result {
        failures.push(format!("the command failed: {e}"));
    }
    if let Some(expected) = &case.state {
        failures.extend(check_state(&outcome, expected));
    }
    (!failures.is_empty()).then(|| failures.join("\n"))
}

fn render_events(events: &[(String, Value)]) -> String {
    events
        .iter()
        .map(|(name, payload)| format!("{name} {payload}\n"))
        .collect()
}

fn check(outcome: &Outcome, expectation: &Expectation) -> Option<String> {
    match (expectation, &outcome.result) {
        (Expectation::Events(expected), Ok(actual)) => (expected != actual).then(|| {
            format!(
                "events differ (- expected, + actual):\n{}",
                diff(&render_events(expected), &render_events(actual))
            )
        }),
        (Expectation::Events(expected), Err(e)) => Some(format!(
            "expected events:\n{}but the command was refused or failed: {e}",
            indent(&render_events(expected))
        )),
        (
            Expectation::Error(kind),
            Err(OutcomeError::Refused {
                kind: actual,
                message,
            }),
        ) => (kind != actual).then(|| format!("expected error {kind}, got {actual}: {message}")),
        (Expectation::Error(kind), Err(failed)) => {
            Some(format!("expected error {kind}, got {failed}"))
        }
        (Expectation::Error(kind), Ok(events)) => Some(format!(
            "expected error {kind}, but the command produced:\n{}",
            indent(&render_events(events))
        )),
    }
}

fn check_state(outcome: &Outcome, expected: &Value) -> Option<String> {
    let Some(actual) = &outcome.state else {
        return Some("no state to compare: the command failed".to_string());
    };
    let (Value::Object(expected_fields), Value::Object(actual_fields)) = (expected, actual) else {
        return (expected != actual).then(|| state_diff(expected, actual));
    };
    let missing: Vec<&String> = expected_fields
        .keys()
        .filter(|key| !actual_fields.contains_key(*key))
        .collect();
    if !missing.is_empty() {
        let has: Vec<&str> = actual_fields.keys().map(String::as_str).collect();
        let names: Vec<String> = missing.iter().map(|k| format!("{k:?}")).collect();
        return Some(format!(
            "the state has no field {} (its fields: {})",
            names.join(", no field "),
            has.join(", ")
        ));
    }
    let mismatched = expected_fields
        .iter()
        .any(|(key, value)| actual_fields.get(key) != Some(value));
    if !mismatched {
        return None;
    }
    // Compare only the fields the spec names.
    let shown: serde_json::Map<String, Value> = expected_fields
        .keys()
        .map(|k| {
            (
                k.clone(),
                actual_fields.get(k).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Some(state_diff(expected, &Value::Object(shown)))
}

fn state_diff(expected: &Value, actual: &Value) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    format!(
        "state differs (- expected, + actual):\n{}",
        diff(&pretty(expected), &pretty(actual))
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// A line diff: `-` expected, `+` actual, two spaces for lines in both.
pub(crate) fn diff(expected: &str, actual: &str) -> String {
    use similar::{ChangeTag, TextDiff};
    TextDiff::from_lines(expected, actual)
        .iter_all_changes()
        .map(|change| {
            let sign = match change.tag() {
                ChangeTag::Delete => "- ",
                ChangeTag::Insert => "+ ",
                ChangeTag::Equal => "  ",
            };
            let line = change.value().trim_end_matches('\n');
            format!("{sign}{line}\n")
        })
        .collect()
}
