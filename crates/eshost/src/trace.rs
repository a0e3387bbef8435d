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
//! They are opened only for a command submitted under a span of a
//! sampled, exported trace: a command that is not traced (traces off, the
//! sampler said no, a one-shot `eshost exec` under no span) costs one look
//! at its caller's span, and nothing per stage.
//!
//! The W3C `traceparent` of the submitting span goes into the metadata of
//! every event a traced command records ([`TRACEPARENT`]), so a projection
//! or the relay that handles the event continues the same trace.

use eshost_core::event::TRACEPARENT;
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A child of `caller` made by `make`, or no span when the command is not
/// traced (`caller` is then none, and `make` is not called).
pub(crate) fn child_of(caller: &Span, make: impl FnOnce() -> Span) -> Span {
    if caller.is_disabled() {
        Span::none()
    } else {
        make()
    }
}

/// The W3C `traceparent` of `span`, when it belongs to a sampled trace
/// that is exported: written by the process's propagator (which is a
/// no-op unless traces are exported).
pub(crate) fn traceparent(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_sampled() {
        return None;
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier)
    });
    carrier.remove(TRACEPARENT)
}
