//! Given/then tests of a projection guest, in the sandbox with no database:
//! given these recorded events, then the view holds exactly these
//! documents (or the guest fails with this error).
//!
//! ```toml
//! projection = "sales-summary"
//!
//! [[case]]
//! name = "a purchase counts for its item and the total"
//! given = [
//!   { id = "s1", event = "FlashSaleCreated", payload = { itemId = "s1", initialStock = 5 } },
//!   { id = "s1", event = "ItemPurchased", payload = { buyerId = "b1", quantity = 2 } },
//! ]
//! then = { "item:s1" = { stock = 3, sold = 2 }, total = { sold = 2, items = 1 } }
//! ```
//!
//! Given events get positions 1, 2, 3 ... and sequence numbers counted per
//! stream; `aggregate` may be left out when the projection reads one type
//! (besides the host's erasures, `$subjects`).

use super::{DEFAULT_ID, diff, empty_object};
use eshost_core::{JsonText, RecordedEvent};
use eshost_wasm::projection::ProjectError;
use eshost_wasm::{LoadedProjection, ProjectionInstance, ViewDocuments};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One projection spec file: cases against one projection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSpecFile {
    /// The projection, found among the loaded projections.
    pub projection: String,
    #[serde(rename = "case", default)]
    pub cases: Vec<ProjectionCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionCase {
    pub name: String,
    #[serde(default)]
    pub given: Vec<GivenEvent>,
    /// The view afterwards: exactly these documents, by key.
    pub then: Option<BTreeMap<String, Value>>,
    /// Text the error of the event that fails must contain.
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenEvent {
    /// The aggregate type [default: the one the projection reads].
    pub aggregate: Option<String>,
    /// The aggregate id [default: test-1].
    pub id: Option<String>,
    pub event: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    /// The event's metadata [default: {}], e.g. `{ personal = { subject =
    /// "psn_1" } }` for an event whose subject the host encrypts.
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

impl ProjectionSpecFile {
    /// Parses and checks a projection spec file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let spec: Self = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if spec.cases.is_empty() {
            return Err("no cases: add at least one [[case]]".into());
        }
        for case in &spec.cases {
            if case.then.is_some() == case.error.is_some() {
                return Err(format!(
                    "case {:?}: give `then` (the documents) or `error`, one of them",
                    case.name
                ));
            }
        }
        Ok(spec)
    }
}

/// Runs one case; `None` if it passed, else a readable explanation with a diff.
pub fn run_projection_case(
    component: &Arc<LoadedProjection>,
    case: &ProjectionCase,
) -> Option<String> {
    let events = match recorded(component, &case.given) {
        Ok(events) => events,
        Err(why) => return Some(why),
    };
    let mut instance = match ProjectionInstance::new(component.clone(), ViewDocuments::empty()) {
        Ok(instance) => instance,
        Err(failed) => return Some(format!("the guest failed to start: {}", failed.0)),
    };
    let mut failure = None;
    for event in &events {
        match instance.project(event) {
            Ok(()) => {}
            Err(ProjectError::Guest(e)) => {
                failure = Some(format!(
                    "event {} ({}) failed: {e}",
                    event.position, event.name
                ));
                break;
            }
            // The empty view never fails to read.
            Err(ProjectError::View(e)) => return Some(e.to_string()),
        }
    }
    match (&case.then, &case.error, failure) {
        (_, Some(expected), Some(failure)) => (!failure.contains(expected.as_str()))
            .then(|| format!("expected an error containing {expected:?}, got: {failure}")),
        (_, Some(expected), None) => Some(format!(
            "expected an error containing {expected:?}, but every event was projected"
        )),
        (_, None, Some(failure)) => Some(failure),
        (Some(expected), None, None) => {
            let actual: BTreeMap<String, Value> = instance
                .documents()
                .pending()
                .into_iter()
                .filter_map(|change| Some((change.key, change.body?.to_value())))
                .collect();
            (expected != &actual).then(|| {
                let pretty = |v: &BTreeMap<String, Value>| {
                    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
                };
                format!(
                    "documents differ (- expected, + actual):\n{}",
                    diff(&pretty(expected), &pretty(&actual))
                )
            })
        }
        (None, None, None) => None,
    }
}

/// The given events as the store would hand them over.
fn recorded(
    component: &LoadedProjection,
    given: &[GivenEvent],
) -> Result<Vec<RecordedEvent>, String> {
    let mut sequences: HashMap<(String, String), u64> = HashMap::new();
    given
        .iter()
        .enumerate()
        .map(|(n, event)| {
            // The host's erasures are not a type a given event defaults to.
            let types: Vec<&String> = component
                .aggregates
                .iter()
                .filter(|a| *a != eshost_core::erasure::SUBJECTS_AGGREGATE)
                .collect();
            let aggregate = match (&event.aggregate, types.as_slice()) {
                (Some(aggregate), _) => aggregate.clone(),
                (None, [only]) => (*only).clone(),
                (None, _) => {
                    return Err(format!(
                        "given event {} ({}) names no aggregate, and {} reads more than one type",
                        n + 1,
                        event.event,
                        component.name
                    ));
                }
            };
            let id = event.id.clone().unwrap_or_else(|| DEFAULT_ID.to_string());
            let sequence = sequences
                .entry((aggregate.clone(), id.clone()))
                .or_default();
            *sequence += 1;
            Ok(RecordedEvent {
                position: n as i64 + 1,
                aggregate,
                id,
                sequence: *sequence,
                name: event.event.clone(),
                payload: JsonText::from_value(&event.payload),
                metadata: event.metadata.clone(),
                created_at: String::new(),
            })
        })
        .collect()
}
