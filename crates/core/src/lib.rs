//! The vocabulary every eshost crate shares, and nothing else: no store, no
//! sandbox, no network. The store and the sandbox both speak it without
//! knowing each other, and so does a client of the HTTP API.
//!
//! # Layout
//!
//! - [`stream`]: [`StreamId`], one aggregate instance's stream.
//! - [`event`]: [`RecordedEvent`] as the store holds it, and [`Snapshot`].
//! - [`json`]: [`JsonText`], a payload's exact JSON text, and
//!   [`storable_json`], the check a payload passes before it is written.
//! - [`command`]: [`CommandRequest`], its [`CommandId`] and its
//!   [`CommandOutcome`].
//! - [`catalog`]: what a host has loaded ([`AggregateInfo`]) and what a
//!   reload changed ([`ReloadReport`]).
//! - [`view`]: projections' records and the changes they make to views.
//! - [`erasure`]: the event that records a data subject's erasure.
//! - [`reaction`]: what a reactor asks the host to do ([`Action`]), and the
//!   id each action is performed under.
//!
//! With the `openapi` feature the types the HTTP API carries derive
//! `utoipa::ToSchema`.

pub mod catalog;
pub mod command;
pub mod erasure;
pub mod event;
pub mod json;
pub mod reaction;
pub mod stream;
pub mod view;

pub use catalog::{
    AggregateInfo, ComponentKind, DeployAction, Deployment, PersonalEvent, RefusedVersion,
    ReloadReport, digest_label,
};
pub use command::{CommandId, CommandOutcome, CommandRequest};
pub use erasure::{ErasedStream, Erasure, SubjectForgotten};
pub use event::{RecordedEvent, Snapshot, now_ms};
pub use json::{JsonText, MAX_PAYLOAD_DEPTH, storable_json};
pub use reaction::{Action, Delivery, Due, OnFailure, ReactionCommand, Scheduled, action_id};
pub use stream::StreamId;
pub use view::{DocumentChange, ProjectionRecord};
