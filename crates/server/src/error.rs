//! What the HTTP API answers when a request fails: RFC 9457 problem
//! details (`application/problem+json`) whose `type` is
//! `/v1/problems/{kind}`, with a stable `kind` and a status that fits it,
//! and the `command_id` on a command's answers. The book's error table
//! (The HTTP server) is this file.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eshost::{CommandError, StoreError};
use eshost_api::{PROBLEM_JSON, Problem};

/// A failed request, ready to answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub command_id: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u32>,
    /// The upgrade check's report, on `upgrade_refused`.
    pub check: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: one_line(&message.into()),
            command_id: None,
            retry_after: None,
            check: None,
        }
    }

    pub fn with_command_id(mut self, command_id: &str) -> Self {
        self.command_id = Some(command_id.to_string());
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The command's outcome is unknown: it may still be recorded. Resending
    /// with the same id is answered with the recorded outcome, if any.
    pub fn timeout(command_id: &str, waited: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer within {} ms; the command may still be recorded: resend it with the same Idempotency-Key to learn its outcome",
                waited.as_millis()
            ),
        )
        .with_command_id(command_id)
    }
}

/// What a kind means: its title in every problem of that kind.
pub fn title(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(known, _, _)| *known == kind)
        .map_or("an error", |(_, _, title)| title)
}

/// A problem's `type`: the route that says what `kind` means.
pub fn problem_type(kind: &str) -> String {
    format!("/v1/problems/{kind}")
}

/// Every error kind with its status and meaning (each problem's title),
/// for the OpenAPI document, `/v1/problems/{kind}` and the book.
pub const KINDS: &[(&str, u16, &str)] = &[
    ("bad_request", 400, "a malformed path, query or header"),
    ("unauthorized", 401, "no or a wrong bearer token"),
    (
        "forbidden",
        403,
        "the token does not have the scope the route needs (the message names it)",
    ),
    (
        "not_found",
        404,
        "no such route, an aggregate never created, or no such document in a view",
    ),
    (
        "foreign_origin",
        403,
        "without a token: an Origin or Host that is not this server's (a web page of another origin)",
    ),
    ("unknown_aggregate", 404, "no loaded component provides it"),
    ("unknown_command", 404, "the aggregate has no such command"),
    (
        "method_not_allowed",
        405,
        "the route exists, the method does not",
    ),
    (
        "precondition_failed",
        409,
        "the aggregate's rules said no in its current state",
    ),
    (
        "conflict",
        409,
        "other writers kept winning the race; resend",
    ),
    (
        "upgrade_refused",
        409,
        "the component failed the upgrade check against the recorded streams (the report is in `check`); it is not deployed, nor checked again",
    ),
    (
        "no_master_key",
        409,
        "the store has no master key: it keeps personal data as written and cannot forget a subject",
    ),
    (
        "no_earlier_version",
        409,
        "the aggregate has no earlier version to roll back to",
    ),
    (
        "request_timeout",
        408,
        "the request's body did not arrive within --body-timeout-ms; nothing read or recorded",
    ),
    (
        "payload_too_large",
        413,
        "the body is over the payload limit",
    ),
    (
        "unsupported_media_type",
        415,
        "without a token: a command's body not sent as application/json",
    ),
    (
        "invalid_payload",
        422,
        "the body is not acceptable JSON for the command",
    ),
    (
        "invalid_command",
        422,
        "the aggregate's rules refuse this command",
    ),
    ("invalid_id", 422, "an id is empty, too long or holds NUL"),
    (
        "invalid_component",
        422,
        "the body is not a component this server can load, or not the aggregate the path names",
    ),
    (
        "idempotency_key_reused",
        422,
        "the key was used for a different command",
    ),
    (
        "overloaded",
        429,
        "the aggregate's queue (or the event log's followers) is full; resend after Retry-After",
    ),
    (
        "guest_fault",
        500,
        "the guest trapped or broke a sandbox limit; nothing recorded",
    ),
    (
        "unreplayable",
        500,
        "this version of the aggregate's logic cannot load the stream; resending never helps",
    ),
    (
        "internal",
        500,
        "a bug in the host; the outcome is unknown: resend with the same key",
    ),
    (
        "store_failed",
        500,
        "the event store failed in a way resending cannot fix (logged for the operator); nothing recorded",
    ),
    (
        "store_unavailable",
        503,
        "the event store failed for now (unreachable, busy, a lost connection); resend with the same key",
    ),
    (
        "too_many_connections",
        503,
        "every connection the server holds is being answered; resend after Retry-After",
    ),
    (
        "shutting_down",
        503,
        "the host is draining; resend to another host",
    ),
    (
        "timeout",
        504,
        "no answer in time; a command's outcome is unknown: resend with the same key (a read: ask again)",
    ),
];

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        use StatusCode as S;
        let kind = error.kind();
        let (status, retry_after) = match kind {
            "unknown_aggregate" | "unknown_command" | "not_found" => (S::NOT_FOUND, None),
            "payload_too_large" => (S::PAYLOAD_TOO_LARGE, None),
            "invalid_payload" | "invalid_id" | "invalid_command" | "idempotency_key_reused" => {
                (S::UNPROCESSABLE_ENTITY, None)
            }
            "precondition_failed" | "conflict" => (S::CONFLICT, None),
            "overloaded" => (S::TOO_MANY_REQUESTS, Some(1)),
            "shutting_down" | "store_unavailable" => (S::SERVICE_UNAVAILABLE, Some(1)),
            _ => (S::INTERNAL_SERVER_ERROR, None),
        };
        Self {
            retry_after,
            ..Self::new(status, kind, error.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        CommandError::Store(error).into()
    }
}

impl ApiError {
    /// The answer's body.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: problem_type(self.kind),
            title: title(self.kind).to_string(),
            status: self.status.as_u16(),
            detail: self.message.clone(),
            kind: self.kind.to_string(),
            command_id: self.command_id.clone(),
            check: self.check.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A problem always serialises: strings and a number.
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Messages are one line: whitespace runs (newlines included) become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
