//! The three versions of the aggregate contract the host loads, behind one
//! type. `eshost:aggregate@0.1.0` (`wit/aggregate.wit`) hands `apply` names
//! and payloads; `0.2.0` (`wit/v0.2/aggregate.wit`) adds each event's
//! sequence number and the version of the guest that recorded it, so a
//! guest can read shapes older versions wrote, and its `apply` names the
//! event it refused; `0.3.0` (`wit/v0.3/aggregate.wit`) adds the personal
//! data the manifest declares. Everything else is the same, so the rest of
//! the host sees one guest: this module converts at the boundary.

use super::instance::DecidedEvent;
use super::sandbox::GuestContext;
use crate::error::Refusal;
use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

/// Generated from `wit/aggregate.wit`.
pub(crate) mod v1 {
    wasmtime::component::bindgen!({ path: "wit", world: "aggregate-guest" });
}

/// Generated from `wit/v0.2/aggregate.wit`.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({ path: "wit/v0.2", world: "aggregate-guest" });
}

/// Generated from `wit/v0.3/aggregate.wit`.
pub(crate) mod v3 {
    wasmtime::component::bindgen!({ path: "wit/v0.3", world: "aggregate-guest" });
}

/// The interfaces a guest may import, one per contract version.
pub const HOST_INTERFACES: [&str; 3] = [
    "eshost:aggregate/host@0.1.0",
    "eshost:aggregate/host@0.2.0",
    "eshost:aggregate/host@0.3.0",
];

/// What a guest declares about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub commands: Vec<String>,
    pub events: Vec<String>,
    /// Old event names `apply` reads and `handle` never returns (0.2.0).
    pub old_events: Vec<String>,
    /// The events that hold personal data, and where (0.3.0).
    pub personal: Vec<eshost_core::PersonalEvent>,
}

/// An event for `apply`: name, payload, sequence and the version that
/// recorded it (empty if unknown). It is 0.3.0's own type, so the newest
/// contract's events are lowered into the guest with no copy on the way.
pub(crate) use v3::exports::eshost::aggregate::aggregate::RecordedEvent as ApplyEvent;

/// Why `apply` failed: the sequence number of the event refused, when the
/// contract says (0.2.0 and later do), and the guest's reason.
pub type ApplyRefusal = (Option<u64>, String);

/// A component checked against one version of the contract, ready to
/// instantiate.
pub(crate) enum GuestPre {
    V1(v1::AggregateGuestPre<GuestContext>),
    V2(v2::AggregateGuestPre<GuestContext>),
    V3(v3::AggregateGuestPre<GuestContext>),
}

impl GuestPre {
    /// The newest contract version the component implements, or why it
    /// implements none (the reason against the oldest).
    pub fn new(instance_pre: InstancePre<GuestContext>) -> wasmtime::Result<Self> {
        if let Ok(pre) = v3::AggregateGuestPre::new(instance_pre.clone()) {
            return Ok(Self::V3(pre));
        }
        match v2::AggregateGuestPre::new(instance_pre.clone()) {
            Ok(pre) => Ok(Self::V2(pre)),
            Err(_) => v1::AggregateGuestPre::new(instance_pre).map(Self::V1),
        }
    }

    /// The contract version, as `eshost aggregates` shows it.
    pub fn contract(&self) -> &'static str {
        match self {
            Self::V1(_) => "0.1.0",
            Self::V2(_) => "0.2.0",
            Self::V3(_) => "0.3.0",
        }
    }

    pub fn instantiate(&self, store: &mut Store<GuestContext>) -> wasmtime::Result<Guest> {
        Ok(match self {
            Self::V1(pre) => Guest::V1(pre.instantiate(&mut *store)?),
            Self::V2(pre) => Guest::V2(pre.instantiate(&mut *store)?),
            Self::V3(pre) => Guest::V3(pre.instantiate(&mut *store)?),
        })
    }
}

/// One instance of a guest.
pub(crate) enum Guest {
    V1(v1::AggregateGuest),
    V2(v2::AggregateGuest),
    V3(v3::AggregateGuest),
}

/// Runs `body` against whichever version `guest` is, with `g` the
/// version's generated guest and `api` its `aggregate` interface module:
/// the calls read the same in each, only the types differ.
macro_rules! either {
    ($guest:expr, |$g:ident, $api:ident| $body:expr) => {
        match $guest {
            Guest::V1($g) => {
                #[allow(unused_imports)]
                use v1::exports::eshost::aggregate::aggregate as $api;
                $body
            }
            Guest::V2($g) => {
                #[allow(unused_imports)]
                use v2::exports::eshost::aggregate::aggregate as $api;
                $body
            }
            Guest::V3($g) => {
                #[allow(unused_imports)]
                use v3::exports::eshost::aggregate::aggregate as $api;
                $body
            }
        }
    };
}

type Result<T> = wasmtime::Result<T>;

impl Guest {
    pub fn describe(&self, store: &mut Store<GuestContext>) -> Result<Manifest> {
        Ok(match self {
            Self::V1(g) => {
                let m = g.eshost_aggregate_aggregate().call_describe(store)?;
                Manifest {
                    name: m.name,
                    version: m.version,
                    commands: m.commands,
                    events: m.events,
                    old_events: Vec::new(),
                    personal: Vec::new(),
                }
            }
            Self::V2(g) => {
                let m = g.eshost_aggregate_aggregate().call_describe(store)?;
                Manifest {
                    name: m.name,
                    version: m.version,
                    commands: m.commands,
                    events: m.events,
                    old_events: m.old_events,
                    personal: Vec::new(),
                }
            }
            Self::V3(g) => {
                let m = g.eshost_aggregate_aggregate().call_describe(store)?;
                Manifest {
                    name: m.name,
                    version: m.version,
                    commands: m.commands,
                    events: m.events,
                    old_events: m.old_events,
                    personal: m
                        .personal
                        .into_iter()
                        .map(|p| eshost_core::PersonalEvent {
                            event: p.event,
                            subject: p.subject,
                            fields: p.fields,
                        })
                        .collect(),
                }
            }
        })
    }

    pub fn construct(&self, store: &mut Store<GuestContext>, id: &str) -> Result<ResourceAny> {
        either!(self, |g, api| g
            .eshost_aggregate_aggregate()
            .state()
            .call_constructor(store, id))
    }

    pub fn restore(
        &self,
        store: &mut Store<GuestContext>,
        id: &str,
        snapshot: &[u8],
    ) -> Result<std::result::Result<ResourceAny, String>> {
        either!(self, |g, api| g
            .eshost_aggregate_aggregate()
            .state()
            .call_restore(store, id, snapshot))
    }

    pub fn apply(
        &self,
        store: &mut Store<GuestContext>,
        state: ResourceAny,
        events: &[ApplyEvent],
    ) -> Result<std::result::Result<(), ApplyRefusal>> {
        match self {
            Self::V1(g) => {
                use v1::exports::eshost::aggregate::aggregate::Event;
                let events: Vec<Event> = events
                    .iter()
                    .map(|e| Event {
                        name: e.name.clone(),
                        payload: e.payload.clone(),
                    })
                    .collect();
                let calls = g.eshost_aggregate_aggregate().state();
                let applied = calls.call_apply(store, state, &events)?;
                Ok(applied.map_err(|reason| (None, reason)))
            }
            Self::V2(g) => {
                use v2::exports::eshost::aggregate::aggregate::RecordedEvent;
                let events: Vec<RecordedEvent> = events
                    .iter()
                    .map(|e| RecordedEvent {
                        name: e.name.clone(),
                        payload: e.payload.clone(),
                        sequence: e.sequence,
                        version: e.version.clone(),
                    })
                    .collect();
                let calls = g.eshost_aggregate_aggregate().state();
                let applied = calls.call_apply(store, state, &events)?;
                Ok(applied.map_err(|e| (Some(e.sequence), e.reason)))
            }
            Self::V3(g) => {
                let calls = g.eshost_aggregate_aggregate().state();
                let applied = calls.call_apply(store, state, events)?;
                Ok(applied.map_err(|e| (Some(e.sequence), e.reason)))
            }
        }
    }

    /// The events a command decides, not yet checked, or the guest's
    /// refusal.
    pub fn handle(
        &self,
        store: &mut Store<GuestContext>,
        state: ResourceAny,
        name: &str,
        payload: &str,
    ) -> Result<std::result::Result<Vec<DecidedEvent>, Refusal>> {
        either!(self, |g, api| {
            let command = api::Command {
                name: name.to_string(),
                payload: payload.to_string(),
            };
            let calls = g.eshost_aggregate_aggregate().state();
            Ok(match calls.call_handle(store, state, &command)? {
                Ok(events) => Ok(events
                    .into_iter()
                    .map(|e| DecidedEvent {
                        name: e.name,
                        payload: e.payload,
                    })
                    .collect()),
                Err(api::CommandError::UnknownCommand(m)) => Err(Refusal::UnknownCommand(m)),
                Err(api::CommandError::InvalidPayload(m)) => Err(Refusal::InvalidPayload(m)),
                Err(api::CommandError::InvalidCommand(m)) => Err(Refusal::InvalidCommand(m)),
                Err(api::CommandError::PreconditionFailed(m)) => {
                    Err(Refusal::PreconditionFailed(m))
                }
            })
        })
    }

    pub fn to_json(&self, store: &mut Store<GuestContext>, state: ResourceAny) -> Result<String> {
        either!(self, |g, api| g
            .eshost_aggregate_aggregate()
            .state()
            .call_to_json(store, state))
    }

    pub fn snapshot(&self, store: &mut Store<GuestContext>, state: ResourceAny) -> Result<Vec<u8>> {
        either!(self, |g, api| g
            .eshost_aggregate_aggregate()
            .state()
            .call_snapshot(store, state))
    }
}
