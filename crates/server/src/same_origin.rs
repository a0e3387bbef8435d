//! A server without a token answers only what a web page of another
//! origin cannot send it. Without this, any page a local user opens could
//! record commands on `localhost` (a form or `fetch` with `text/plain`
//! needs no permission), reload its modules, or, through a domain that
//! resolves to 127.0.0.1 (DNS rebinding), read its answers.
//!
//! - A command's body must be declared `application/json`: a page cannot
//!   send that type to another origin without the browser asking first,
//!   and this server never says yes.
//! - A request that names an `Origin` must name this server's: the `Host`
//!   it was sent to.
//! - Listening on loopback, the `Host` must be a loopback name or address:
//!   a rebound page sends its own domain.
//!
//! Requests with no `Origin` (curl, the command line, probes) pass the
//! second check, and those with no `Host` (HTTP/1.0) the third: a browser
//! sends both. With a token configured none of this applies: a page
//! cannot send the token.

use super::App;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// Lets through what a page of another origin could not have sent.
pub async fn require_same_origin(State(app): State<App>, request: Request, next: Next) -> Response {
    match refusal(&app, &request) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

fn refusal(app: &App, request: &Request) -> Option<ApiError> {
    let headers = request.headers();
    let host = text(headers, header::HOST);
    if let Some(origin) = text(headers, header::ORIGIN) {
        let same = host.is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        });
        if !same {
            return Some(foreign(format!(
                "Origin {origin} is not this server's; without a token it answers only its own origin"
            )));
        }
    }
    let on_loopback = app.listening.is_some_and(|a| a.ip().is_loopback());
    if on_loopback
        && let Some(host) = host
        && !is_loopback_host(host)
    {
        return Some(foreign(format!(
            "Host {host} is not a loopback name; without a token this server answers only those"
        )));
    }
    if request.method() == Method::POST && is_command(request.uri().path()) {
        let json = text(headers, header::CONTENT_TYPE).is_some_and(|value| {
            let media_type = value.split(';').next().unwrap_or_default().trim();
            media_type.eq_ignore_ascii_case("application/json")
        });
        if !json {
            return Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a command's body must be sent with Content-Type: application/json",
            ));
        }
    }
    None
}

fn foreign(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "foreign_origin", message)
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `/v1/aggregates/{aggregate}/{id}/commands/{command}`.
fn is_command(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    let mut next = || segments.next();
    matches!(
        (next(), next(), next(), next(), next(), next(), next()),
        (
            Some("v1"),
            Some("aggregates"),
            Some(_),
            Some(_),
            Some("commands"),
            Some(_),
            None
        )
    )
}

/// `localhost` (and its subdomains, RFC 6761) or a loopback address, with
/// or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "a.localhost",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn the_command_route_is_recognised() {
        assert!(is_command(
            "/v1/aggregates/FlashSaleItem/s1/commands/PurchaseItem"
        ));
        assert!(!is_command("/v1/aggregates/FlashSaleItem/s1"));
        assert!(!is_command("/v1/admin/reload"));
    }
}
