//! Checking a new version of an aggregate's component against the streams
//! already recorded, before it goes live (`eshost upgrade check`).
//!
//! Two steps. First, without replaying anything: every event name recorded
//! for the aggregate must be one the candidate declares. Then the selected
//! streams are replayed from their events (no snapshots) with the current
//! and the candidate version side by side: a stream the candidate cannot
//! apply fails the check, naming the stream and the event; a stream whose
//! state (`to-json`) differs is reported with a JSON Patch from the current
//! state to the candidate's, for a person to judge.

use crate::dispatch::{Host, HostOptions};
use crate::error::{CommandError, LoadError};
use eshost_store::EventStore;
use eshost_wasm::{LoadedComponent, Modules};
use serde::Serialize;
use std::sync::Arc;

/// Streams listed in a report one by one; past these only counted.
pub const MAX_LISTED: usize = 100;
/// Patch operations shown for one changed stream; past these only counted.
pub const MAX_OPERATIONS: usize = 20;
/// How often a stream written to during its check is replayed again.
const REPLAYS_OF_A_LIVE_STREAM: u32 = 5;
/// A replay's answer: the state as JSON text and its version.
type Rendered = Result<(String, u64), CommandError>;
/// Stream ids read from the store per page when checking all of them.
const IDS_PER_PAGE: u64 = 1_000;

/// Why a check could not be completed (a finding is not an error: it is in
/// the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// `--stream` names a stream with no events.
    #[error("{aggregate} {id} has no events: there is nothing to check")]
    NoSuchStream { aggregate: String, id: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed (a guest failure is a finding, not this).
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<crate::error::StoreError> for UpgradeError {
    fn from(error: crate::error::StoreError) -> Self {
        Self::Command(error.into())
    }
}

/// Which streams to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// This many, chosen at random.
    Sample(u64),
    Stream(String),
}

/// What the check found. It passes (`passed`, set when the run ends) when
/// every recorded event name is declared and every checked stream replays.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub aggregate: String,
    /// The loaded version, if the aggregate is loaded at all.
    pub current_version: Option<String>,
    pub candidate_version: String,
    pub candidate_digest: String,
    /// Event names recorded for the aggregate that the candidate does not
    /// declare.
    pub undeclared_events: Vec<String>,
    pub streams_checked: u64,
    /// Streams the candidate cannot replay (at most [`MAX_LISTED`]).
    pub failed: Vec<FailedStream>,
    pub failed_count: u64,
    /// Streams whose state differs (at most [`MAX_LISTED`]).
    pub changed: Vec<ChangedStream>,
    pub changed_count: u64,
    /// Streams the current version itself cannot replay: not the
    /// candidate's fault, so they do not fail the check.
    pub already_failing: Vec<FailedStream>,
    pub passed: bool,
}

impl Report {
    /// Why the check failed, in one line (empty if it passed).
    pub fn failure(&self) -> String {
        let mut reasons = Vec::new();
        if !self.undeclared_events.is_empty() {
            reasons.push(format!(
                "{} {} does not declare recorded events {}",
                self.aggregate,
                self.candidate_version,
                self.undeclared_events.join(", ")
            ));
        }
        if let Some(first) = self.failed.first() {
            reasons.push(format!(
                "{} of {} streams cannot be loaded, e.g. {}",
                self.failed_count, self.streams_checked, first.error
            ));
        }
        reasons.join("; ")
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedStream {
    pub id: String,
    /// The error, naming the version and the event.
    pub error: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangedStream {
    pub id: String,
    /// The stream's version (its last event's sequence number).
    pub version: u64,
    /// RFC 6902 operations from the current state to the candidate's (at
    /// most [`MAX_OPERATIONS`]).
    pub patch: Vec<serde_json::Value>,
    pub operation_count: usize,
    /// The current state, to read the patch against.
    #[serde(skip)]
    pub current_state: serde_json::Value,
}

/// A check in progress: one host per version, each replaying from events
/// only, caching nothing between streams.
pub struct UpgradeCheck {
    store: Arc<dyn EventStore>,
    current: Option<Host>,
    candidate: Host,
    report: Report,
}

impl UpgradeCheck {
    /// Prepares the check of `candidate` against the streams in `store`,
    /// with `current` the version loaded now (if any), and runs the first
    /// step: every recorded event name declared.
    pub async fn new(
        store: Arc<dyn EventStore>,
        current: Option<Arc<LoadedComponent>>,
        candidate: Arc<LoadedComponent>,
    ) -> Result<Self, UpgradeError> {
        let aggregate = candidate.name.clone();
        let recorded = store.catalog().event_names(&aggregate).await?;
        let undeclared_events: Vec<String> = recorded
            .into_iter()
            .filter(|name| !candidate.reads(name))
            .collect();
        let report = Report {
            aggregate,
            current_version: current.as_ref().map(|c| c.version.clone()),
            candidate_version: candidate.version.clone(),
            candidate_digest: candidate.digest.clone(),
            passed: false,
            undeclared_events,
            streams_checked: 0,
            failed: Vec::new(),
            failed_count: 0,
            changed: Vec::new(),
            changed_count: 0,
            already_failing: Vec::new(),
        };
        let replaying = |component: Arc<LoadedComponent>| -> Result<Host, LoadError> {
            let mut modules = Modules::default();
            modules.insert_shared(component)?;
            let options = HostOptions {
                snapshot_every: 0,
                cache_capacity: 1,
                guest_threads: 1,
                ..HostOptions::default()
            };
            Ok(Host::with_options(modules, store.clone(), options))
        };
        Ok(Self {
            current: current.map(&replaying).transpose()?,
            candidate: replaying(candidate)?,
            store,
            report,
        })
    }

    /// How many streams `selection` covers.
    pub async fn count(&self, selection: &Selection) -> Result<u64, UpgradeError> {
        Ok(match selection {
            Selection::All => {
                self.store
                    .catalog()
                    .count_streams(&self.report.aggregate)
                    .await?
            }
            Selection::Sample(n) => (*n).min(
                self.store
                    .catalog()
                    .count_streams(&self.report.aggregate)
                    .await?,
            ),
            Selection::Stream(_) => 1,
        })
    }

    /// Replays the selected streams with both versions, calling `progress`
    /// after each with how many are done; then returns the report.
    pub async fn run(
        mut self,
        selection: &Selection,
        mut progress: impl FnMut(u64),
    ) -> Result<Report, UpgradeError> {
        let aggregate = self.report.aggregate.clone();
        match selection {
            Selection::Stream(id) => {
                let stream = eshost_store::StreamId::new(&aggregate, id);
                if self
                    .store
                    .streams()
                    .load_page(&stream, 0, Some(1))
                    .await?
                    .is_empty()
                {
                    return Err(UpgradeError::NoSuchStream {
                        aggregate,
                        id: id.clone(),
                    });
                }
                self.check_stream(id).await?;
                progress(1);
            }
            Selection::Sample(n) => {
                for id in self
                    .store
                    .catalog()
                    .sample_stream_ids(&aggregate, *n)
                    .await?
                {
                    self.check_stream(&id).await?;
                    progress(self.report.streams_checked);
                }
            }
            Selection::All => {
                let mut after = String::new();
                loop {
                    let ids = self
                        .store
                        .catalog()
                        .stream_ids(&aggregate, &after, IDS_PER_PAGE)
                        .await?;
                    for id in &ids {
                        self.check_stream(id).await?;
                        progress(self.report.streams_checked);
                    }
                    match ids.into_iter().last() {
                        Some(last) => after = last,
                        None => break,
                    }
                }
            }
        }
        let report = &mut self.report;
        report.passed = report.undeclared_events.is_empty() && report.failed_count == 0;
        Ok(self.report)
    }

    /// Replays a stream with both versions at once. A live stream may grow
    /// between the two reads; then both replay again (a few times), so the
    /// states compared are of the same events.
    async fn replay_both(&self, id: &str) -> (Option<Rendered>, Rendered) {
        let aggregate = &self.report.aggregate;
        let mut attempts = 0;
        loop {
            let current = async {
                match &self.current {
                    Some(host) => Some(host.render(aggregate, id).await),
                    None => None,
                }
            };
            let (current, candidate) = tokio::join!(current, self.candidate.render(aggregate, id));
            attempts += 1;
            let same_version = match (&current, &candidate) {
                (Some(Ok((_, a))), Ok((_, b))) => a == b,
                _ => true,
            };
            if same_version || attempts == REPLAYS_OF_A_LIVE_STREAM {
                return (current, candidate);
            }
        }
    }

    /// Replays one stream with both versions and records what differs. A
    /// guest failure is a finding; a store failure ends the check.
    async fn check_stream(&mut self, id: &str) -> Result<(), CommandError> {
        let (current, candidate) = self.replay_both(id).await;
        self.report.streams_checked += 1;
        let current = match current.transpose() {
            Ok(current) => current,
            Err(CommandError::Guest(e)) => {
                if self.report.already_failing.len() < MAX_LISTED {
                    self.report.already_failing.push(FailedStream {
                        id: id.to_string(),
                        error: e.to_string(),
                    });
                }
                None
            }
            Err(other) => return Err(other),
        };
        let (candidate_json, version) = match candidate {
            Ok(rendered) => rendered,
            Err(CommandError::Guest(e)) => {
                self.report.failed_count += 1;
                if self.report.failed.len() < MAX_LISTED {
                    self.report.failed.push(FailedStream {
                        id: id.to_string(),
                        error: e.to_string(),
                    });
                }
                return Ok(());
            }
            Err(other) => return Err(other),
        };
        let Some((current_json, current_version)) = current else {
            return Ok(());
        };
        if current_version != version {
            // Written to while replayed, every time: no like-for-like state.
            return Ok(());
        }
        let parse = |json: &str| {
            serde_json::from_str(json).unwrap_or(serde_json::Value::String(json.to_string()))
        };
        let (before, after) = (parse(&current_json), parse(&candidate_json));
        if before == after {
            return Ok(());
        }
        self.report.changed_count += 1;
        if self.report.changed.len() < MAX_LISTED {
            let operations = json_patch::diff(&before, &after).0;
            let operation_count = operations.len();
            let patch = operations
                .iter()
                .take(MAX_OPERATIONS)
                .map(|op| serde_json::to_value(op).unwrap_or_default())
                .collect();
            self.report.changed.push(ChangedStream {
                id: id.to_string(),
                version,
                patch,
                operation_count,
                current_state: before,
            });
        }
        Ok(())
    }
}
