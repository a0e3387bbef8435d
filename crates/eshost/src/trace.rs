//! A command's trace. The engine opens these spans for each command, at
//! debug level, under the span that was current when the command was
//! submitted (the HTTP request's, under `eshost serve`):
//!
//! - `queue`: waiting in its stream's queue until a batch takes it;
//! - `decide`: the guest deciding it (with the fuel it used, when calls
//!   run on a fuel budget);
//! - `append`: its events appended and their outcome settled;
//! - `commit`: the transaction that carried it. One group commit serves
//!   many commands, so the span is a child of the first command's `append`
//!   and links the `append` of every command it carried;
//! - `snapshot`: a snapshot taken after its batch.
//!
//! A command submitted under no span (a one-shot `eshost exec`) gets none
//! of them. They are recorded only by a subscriber that takes debug spans
//! of `eshost`: the OpenTelemetry export does; the log, at its default
//! level, does not, and a span it disables costs a branch.
//!
//! The W3C `traceparent` of the submitting span goes into the metadata of
//! every event the command records ([`TRACEPARENT`]), so a projection or
//! the relay that handles the event continues the same trace.

use eshost_core::event::TRACEPARENT;
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A child of `caller` made by `make`, or no span when the command was
/// submitted under none (`make` is not called then).
pub(crate) fn child_of(caller: &Span, make: impl FnOnce() -> Span) -> Span {
    if caller.is_disabled() {
        Span::none()
    } else {
        make()
    }
}

/// The W3C `traceparent` of `span`, when it belongs to an exported trace:
/// written by the process's propagator, which is a no-op unless traces are
/// exported.
pub(crate) fn traceparent(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier)
    });
    carrier.remove(TRACEPARENT)
}
