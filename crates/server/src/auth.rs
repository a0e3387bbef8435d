//! Access: with a token configured, every request but `GET /healthz` must
//! carry `Authorization: Bearer <token>`; `/v1/admin/*` needs the admin
//! token when one is configured. Tokens are compared in constant time (as
//! sha256 digests, so the length does not show either).

use super::App;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Lets a request through if no token is configured, it is the liveness
/// probe, or it carries the token.
pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let admin = path.starts_with("/v1/admin/");
    let expected = match (admin, &app.config.admin_token, &app.config.token) {
        (true, Some(admin_token), _) => admin_token.as_str(),
        (_, _, Some(token)) => token.as_str(),
        (_, _, None) => return next.run(request).await,
    };
    if path == "/healthz" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if same_secret(token, expected) => next.run(request).await,
        Some(_) if admin => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "/v1/admin/* needs the admin token",
        )
        .into_response(),
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this server needs Authorization: Bearer <token>",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Equal secrets, compared in time that depends on neither's content nor length.
pub fn same_secret(presented: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_by_content() {
        assert!(super::same_secret("s3cret", "s3cret"));
        assert!(!super::same_secret("s3cret", "s3creT"));
        assert!(!super::same_secret("", "s3cret"));
    }
}
