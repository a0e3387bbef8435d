//! Reactor guests: loading a component that exports `reactor` (the
//! `reactor-guest` world), and calling it one event at a time for the
//! actions the event calls for (see `wit/reactor.wit`).
//!
//! Same sandbox as the other guests: the same limits on every call, the
//! same compiled-code cache, and no import but `host.log`. What a reactor
//! returns is checked here, before the host records any of it: a command
//! for an aggregate named as the host names them, JSON payloads, keys and
//! sinks it declared, and a bounded number of actions.

use super::artifacts::ArtifactCache;
use super::component::{compile, compile_bytes, first_line, refuse_imports_beyond};
use super::contract::HOST_INTERFACES;
use super::sandbox::{self, GuestContext, Limits};
use crate::error::{GuestError, LoadError};
use bindings::ReactorGuestPre;
use bindings::exports::eshost::aggregate::reactor::{
    self as wit, Action as WitAction, Due as WitDue, Manifest,
};
use eshost_core::{
    Action, Delivery, Due, JsonText, ReactionCommand, RecordedEvent, Scheduled, storable_json,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// Generated from `wit/reactor.wit`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({ path: "wit", world: "reactor-guest" });
}

/// The most actions one event may call for.
pub const MAX_ACTIONS_PER_EVENT: usize = 100;

/// The largest command payload or delivery body a reaction may carry.
pub const MAX_ACTION_BYTES: usize = 1 << 20;

/// The longest aggregate id a command may name (the host admits no
/// longer one).
const MAX_ID_BYTES: usize = 1024;

/// Events of one aggregate type a reactor receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub aggregate: String,
    /// Event names; empty for every event of the aggregate.
    pub events: Vec<String>,
}

/// A compiled, checked reactor component.
pub struct LoadedReactor {
    /// The reactor, from the manifest.
    pub name: String,
    pub version: String,
    pub subscriptions: Vec<Subscription>,
    /// The sinks it delivers to.
    pub sinks: Vec<String>,
    /// sha256 of the component, hex.
    pub digest: String,
    pub path: PathBuf,
    pub limits: Limits,
    engine: Engine,
    tag: Arc<str>,
    pre: ReactorGuestPre<GuestContext>,
}

impl std::fmt::Debug for LoadedReactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedReactor")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedReactor {
    /// Reads, compiles (or takes from `cache`) and checks the reactor
    /// component at `path`.
    pub fn load(
        engine: &Engine,
        limits: Limits,
        cache: Option<&ArtifactCache>,
        path: &Path,
    ) -> Result<Self, LoadError> {
        let (component, digest) = compile(engine, cache, path)?;
        Self::check(engine, limits, path, digest, component)
    }

    /// The same from the component's bytes; `origin` names where they came
    /// from in messages and in [`LoadedReactor::path`].
    pub fn load_bytes(
        engine: &Engine,
        limits: Limits,
        cache: Option<&ArtifactCache>,
        origin: &Path,
        bytes: Vec<u8>,
    ) -> Result<Self, LoadError> {
        let (component, digest) = compile_bytes(engine, cache, origin, bytes)?;
        Self::check(engine, limits, origin, digest, component)
    }

    fn check(
        engine: &Engine,
        limits: Limits,
        path: &Path,
        digest: String,
        component: Component,
    ) -> Result<Self, LoadError> {
        refuse_imports_beyond(
            engine,
            &component,
            path,
            "a reactor guest",
            // Any contract version's `log`, as for projections.
            &HOST_INTERFACES,
        )?;
        let mut linker: Linker<GuestContext> = Linker::new(engine);
        sandbox::link_host(&mut linker).map_err(|e| LoadError::new(path, first_line(&e)))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(path, first_line(&e)))?;
        let pre = ReactorGuestPre::new(instance_pre).map_err(|e| {
            LoadError::new(
                path,
                format!(
                    "not an eshost reactor guest (reactor-guest@0.1.0): {}",
                    first_line(&e)
                ),
            )
        })?;
        let manifest = describe(engine, &limits, &pre).map_err(|e| LoadError::new(path, e))?;
        check_manifest(&manifest).map_err(|e| LoadError::new(path, e))?;
        Ok(Self {
            tag: Arc::from(manifest.name.as_str()),
            name: manifest.name,
            version: manifest.version,
            subscriptions: manifest
                .subscriptions
                .into_iter()
                .map(|s| Subscription {
                    aggregate: s.aggregate,
                    events: s.events,
                })
                .collect(),
            sinks: manifest.sinks,
            digest,
            path: path.to_path_buf(),
            limits,
            engine: engine.clone(),
            pre,
        })
    }

    /// Does this reactor receive `event` (by aggregate and event name)?
    pub fn receives(&self, aggregate: &str, event: &str) -> bool {
        self.subscriptions.iter().any(|s| {
            s.aggregate == aggregate && (s.events.is_empty() || s.events.iter().any(|e| e == event))
        })
    }

    /// The aggregate types it receives events of.
    pub fn aggregates(&self) -> Vec<String> {
        let mut aggregates: Vec<String> = self
            .subscriptions
            .iter()
            .map(|s| s.aggregate.clone())
            .collect();
        aggregates.sort();
        aggregates.dedup();
        aggregates
    }
}

fn describe(
    engine: &Engine,
    limits: &Limits,
    pre: &ReactorGuestPre<GuestContext>,
) -> Result<Manifest, String> {
    let context = GuestContext::new(Arc::from("(loading)"), limits);
    let mut store = sandbox::new_store_with(engine, context);
    sandbox::arm(&mut store, limits);
    let guest = pre.instantiate(&mut store).map_err(|e| {
        let failure = sandbox::classify(store.data_mut(), limits, "instantiate", e);
        format!("instantiating failed: {failure}")
    })?;
    guest
        .eshost_aggregate_reactor()
        .call_describe(&mut store)
        .map_err(|e| {
            let failure = sandbox::classify(store.data_mut(), limits, "describe", e);
            format!("describe failed: {failure}")
        })
}

fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    use super::component::{MAX_DECLARED, MAX_NAME_BYTES};
    let name = &manifest.name;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.chars().all(valid) {
        return Err(format!(
            "reactor name {:?} is not 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.'",
            one_line(name)
        ));
    }
    if manifest.version.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{name}: the version is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            manifest.version.len()
        ));
    }
    if manifest.subscriptions.is_empty() {
        return Err(format!(
            "{name}: it subscribes to nothing; name at least one aggregate"
        ));
    }
    let declared = manifest
        .subscriptions
        .iter()
        .map(|s| 1 + s.events.len())
        .sum::<usize>()
        + manifest.sinks.len();
    let too_long = manifest.subscriptions.iter().any(|s| {
        s.aggregate.is_empty()
            || s.aggregate.len() > MAX_NAME_BYTES
            || s.events.iter().any(|e| e.len() > MAX_NAME_BYTES)
    }) || manifest
        .sinks
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_NAME_BYTES);
    if declared > MAX_DECLARED || too_long {
        return Err(format!(
            "{name}: at most {MAX_DECLARED} aggregates, events and sinks, each 1 to {MAX_NAME_BYTES} bytes"
        ));
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    sandbox::one_line(text, 200)
}

/// One instance of a reactor guest. After a trap it must not be called
/// again: make a new one.
pub struct ReactorInstance {
    pub component: Arc<LoadedReactor>,
    store: Store<GuestContext>,
    guest: bindings::ReactorGuest,
}

impl ReactorInstance {
    pub fn new(component: Arc<LoadedReactor>) -> Result<Self, GuestError> {
        let limits = component.limits;
        let context = GuestContext::new(component.tag.clone(), &limits);
        let mut store = sandbox::new_store_with(&component.engine, context);
        sandbox::arm(&mut store, &limits);
        match component.pre.instantiate(&mut store) {
            Ok(guest) => Ok(Self {
                component,
                store,
                guest,
            }),
            Err(e) => Err(sandbox::classify(
                store.data_mut(),
                &limits,
                "instantiate",
                e,
            )),
        }
    }

    /// The actions `event` calls for, checked; or why the reactor refused
    /// or failed it (then nothing of it is to be performed).
    pub fn react(&mut self, event: &RecordedEvent) -> Result<Vec<Action>, GuestError> {
        let limits = self.component.limits;
        sandbox::arm(&mut self.store, &limits);
        let argument = wit::RecordedEvent {
            position: event.position,
            aggregate: event.aggregate.clone(),
            id: event.id.clone(),
            sequence: event.sequence,
            name: event.name.clone(),
            payload: event.payload.as_str().to_owned(),
            metadata: event.metadata.to_string(),
            recorded_at: event.recorded_at_ms().unwrap_or_default(),
        };
        let returned = self
            .guest
            .eshost_aggregate_reactor()
            .call_react(&mut self.store, &argument);
        let failed = |message: String| GuestError::ReactionFailed {
            reactor: self.component.name.clone(),
            message,
        };
        let actions = match returned {
            Ok(Ok(actions)) => actions,
            Ok(Err(message)) => return Err(failed(sandbox::one_line(&message, 1024))),
            Err(e) => {
                return Err(sandbox::classify(
                    self.store.data_mut(),
                    &limits,
                    "react",
                    e,
                ));
            }
        };
        let mut actions = checked_actions(&self.component.sinks, actions).map_err(failed)?;
        for action in &mut actions {
            action.inherit_correlation(event.correlation_id());
        }
        Ok(actions)
    }
}

/// The actions a guest returned, as the host records them; or why they
/// cannot be performed.
fn checked_actions(sinks: &[String], actions: Vec<WitAction>) -> Result<Vec<Action>, String> {
    if actions.len() > MAX_ACTIONS_PER_EVENT {
        return Err(format!(
            "one event called for {} actions; at most {MAX_ACTIONS_PER_EVENT} are allowed",
            actions.len()
        ));
    }
    actions
        .into_iter()
        .map(|action| {
            Ok(match action {
                WitAction::Send(command) => Action::Send(checked_command(command)?),
                WitAction::Schedule(schedule) => Action::Schedule(Scheduled {
                    key: checked_key(schedule.key)?,
                    due: match schedule.due {
                        WitDue::At(at) => Due::AtMs(at),
                        WitDue::After(after) => Due::AfterMs(after),
                    },
                    command: checked_command(schedule.command)?,
                }),
                WitAction::Cancel(key) => Action::Cancel(checked_key(key)?),
                WitAction::Deliver(delivery) => {
                    if !sinks.contains(&delivery.sink) {
                        return Err(format!(
                            "a delivery to sink {:?}, which the manifest does not name (it names: {})",
                            one_line(&delivery.sink),
                            sinks.join(", ")
                        ));
                    }
                    Action::Deliver(Delivery {
                        body: checked_json("a delivery's body", delivery.body)?,
                        sink: delivery.sink,
                    })
                }
            })
        })
        .collect()
}

fn checked_command(command: wit::Command) -> Result<ReactionCommand, String> {
    use super::component::MAX_NAME_BYTES;
    for (what, text) in [
        ("aggregate", &command.aggregate),
        ("command", &command.name),
    ] {
        if text.is_empty() || text.len() > MAX_NAME_BYTES {
            return Err(format!(
                "a command's {what} name {:?} is not 1 to {MAX_NAME_BYTES} bytes",
                one_line(text)
            ));
        }
    }
    if command.id.is_empty() || command.id.len() > MAX_ID_BYTES {
        return Err(format!(
            "a command's aggregate id {:?} is not 1 to {} bytes",
            one_line(&command.id),
            MAX_ID_BYTES
        ));
    }
    if let Some(correlation) = &command.correlation_id
        && (correlation.is_empty() || correlation.len() > MAX_NAME_BYTES)
    {
        return Err(format!(
            "a command's correlation id {:?} is not 1 to {MAX_NAME_BYTES} bytes",
            one_line(correlation)
        ));
    }
    Ok(ReactionCommand {
        payload: checked_json(&format!("{}'s payload", command.name), command.payload)?,
        aggregate: command.aggregate,
        id: command.id,
        command: command.name,
        correlation_id: command.correlation_id,
    })
}

fn checked_key(key: String) -> Result<String, String> {
    use super::component::MAX_NAME_BYTES;
    if key.is_empty() || key.len() > MAX_NAME_BYTES || key.contains('\0') {
        return Err(format!(
            "timer key {:?} is not 1 to {MAX_NAME_BYTES} bytes without a NUL",
            one_line(&key)
        ));
    }
    Ok(key)
}

fn checked_json(what: &str, text: String) -> Result<JsonText, String> {
    if text.len() > MAX_ACTION_BYTES {
        return Err(format!(
            "{what} is {} bytes; at most {MAX_ACTION_BYTES} are allowed",
            text.len()
        ));
    }
    storable_json(&text).map_err(|reason| format!("{what} is not storable JSON: {reason}"))?;
    JsonText::new(text).map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(payload: &str) -> wit::Command {
        wit::Command {
            aggregate: "Order".into(),
            id: "o1".into(),
            name: "ReserveOrder".into(),
            payload: payload.into(),
            correlation_id: Some("order:o1".into()),
        }
    }

    fn refusal(actions: Vec<WitAction>) -> String {
        checked_actions(&["confirmations".into()], actions).unwrap_err()
    }

    #[test]
    fn what_a_reaction_returns_is_checked_before_anything_is_recorded() {
        let actions = checked_actions(
            &["confirmations".into()],
            vec![
                WitAction::Send(command("{}")),
                WitAction::Schedule(wit::Schedule {
                    key: "expire:o1".into(),
                    due: WitDue::After(1_000),
                    command: command(r#"{"a":1}"#),
                }),
                WitAction::Cancel("expire:o1".into()),
                WitAction::Deliver(wit::Delivery {
                    sink: "confirmations".into(),
                    body: r#"{"order":"o1"}"#.into(),
                }),
            ],
        )
        .unwrap();
        assert_eq!(actions.len(), 4);
        assert!(matches!(&actions[1], Action::Schedule(s) if s.due == Due::AfterMs(1_000)));

        let error = refusal(vec![WitAction::Deliver(wit::Delivery {
            sink: "elsewhere".into(),
            body: "{}".into(),
        })]);
        assert!(error.contains("does not name"), "{error}");
        let error = refusal(vec![WitAction::Send(command("not json"))]);
        assert!(
            error.contains("ReserveOrder's payload is not storable JSON"),
            "{error}"
        );
        let error = refusal(vec![WitAction::Cancel(String::new())]);
        assert!(error.contains("timer key"), "{error}");
        let error = refusal(vec![WitAction::Send(wit::Command {
            aggregate: String::new(),
            ..command("{}")
        })]);
        assert!(error.contains("aggregate name"), "{error}");
        let error = refusal(vec![
            WitAction::Cancel("k".into());
            MAX_ACTIONS_PER_EVENT + 1
        ]);
        assert!(error.contains("at most 100"), "{error}");
    }
}
