//! Access: named bearer tokens, each with scopes.
//!
//! - `read`: the `GET` routes and the global log (`GET /v1/events`).
//! - `write`: commands.
//! - `admin`: `/v1/admin/*` (reload), deploying and rolling back
//!   components (`PUT` and `POST` under `/v1/modules/`), rebuilding a
//!   projection (`POST` under `/v1/projections/`).
//!
//! With any token configured, every request needs one
//! (`Authorization: Bearer <secret>`, the scheme in any case), except the
//! probes (`/healthz`, `/readyz`, `/metrics`) unless they are protected:
//! a load balancer's health check sends no header. A browser's
//! `EventSource` cannot send a header either, so the global log also takes
//! the secret as `?access_token=` (RFC 6750 §2.3); request logs never show
//! a query.
//!
//! No token: 401. A token without the scope: 403 naming the scope, and
//! nothing else. Secrets are kept only as sha256 digests and compared in
//! time that depends on neither their content nor their length, against
//! every token, so which token matched does not show either.

use super::App;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The `GET` routes and the global log.
    Read,
    /// Commands.
    Write,
    /// `/v1/admin/*`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named token. Its secret is kept only as a digest.
#[derive(Clone)]
pub struct Token {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A token, refused if its name or secret is blank or it has no scope.
    pub fn new(name: &str, secret: &str, scopes: &[Scope]) -> Result<Self, TokenError> {
        if name.trim().is_empty() {
            return Err(TokenError::NoName);
        }
        if secret.trim().is_empty() {
            return Err(TokenError::EmptySecret { name: name.into() });
        }
        if scopes.is_empty() {
            return Err(TokenError::NoScopes { name: name.into() });
        }
        Ok(Self {
            name: name.into(),
            digest: Sha256::digest(secret).into(),
            scopes: scopes.to_vec(),
        })
    }

    /// How the token is named in logs, and later in records of what it did.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The tokens a server accepts. None: no auth (see [`super::same_origin`]).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Arc<[Token]>,
}

impl Tokens {
    /// These tokens, refused if two share a name or a secret (a secret
    /// must tell one token from the others).
    pub fn new(tokens: Vec<Token>) -> Result<Self, TokenError> {
        for (n, token) in tokens.iter().enumerate() {
            for earlier in &tokens[..n] {
                if earlier.name == token.name {
                    return Err(TokenError::SameName {
                        name: token.name.to_string(),
                    });
                }
                if earlier.digest == token.digest {
                    return Err(TokenError::SameSecret {
                        first: earlier.name.to_string(),
                        second: token.name.to_string(),
                    });
                }
            }
        }
        Ok(Self {
            tokens: tokens.into(),
        })
    }

    /// One token with every scope: what `ESHOST_TOKEN` gives.
    pub fn single(secret: &str) -> Result<Self, TokenError> {
        Self::new(vec![Token::new("default", secret, &Scope::ALL)?])
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose secret was presented. Every token is compared, so
    /// the time taken says nothing about which one matched.
    pub fn find(&self, presented: &str) -> Option<&Token> {
        let digest = Sha256::digest(presented);
        let mut found = None;
        for token in self.tokens.iter() {
            if same_digest(&digest, &token.digest) {
                found = Some(token);
            }
        }
        found
    }

    /// The tokens of a TOML file:
    ///
    /// ```toml
    /// [[token]]
    /// name = "ci"
    /// secret_env = "ESHOST_CI_SECRET"   # or: secret = "..."
    /// scopes = ["read", "write"]
    /// ```
    pub fn load(path: &Path) -> Result<Vec<Token>, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| TokenError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        if file.token.is_empty() {
            return Err(TokenError::NoTokens {
                path: path.to_path_buf(),
            });
        }
        file.token
            .into_iter()
            .map(|entry| {
                let secret = match (entry.secret, entry.secret_env) {
                    (Some(secret), None) => secret,
                    (None, Some(variable)) => {
                        std::env::var(&variable).map_err(|_| TokenError::MissingVariable {
                            name: entry.name.clone(),
                            variable,
                        })?
                    }
                    _ => return Err(TokenError::SecretSource { name: entry.name }),
                };
                Token::new(&entry.name, &secret, &entry.scopes)
            })
            .collect()
    }
}

/// A tokens file (see [`Tokens::load`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    secret: Option<String>,
    secret_env: Option<String>,
    scopes: Vec<Scope>,
}

/// Why tokens could not be configured. No message holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token has an empty name")]
    NoName,
    #[error("token {name}: the secret is empty")]
    EmptySecret { name: String },
    #[error("token {name}: no scopes (give some of read, write, admin)")]
    NoScopes { name: String },
    #[error("two tokens are named {name}")]
    SameName { name: String },
    #[error("tokens {first} and {second} have the same secret")]
    SameSecret { first: String, second: String },
    #[error("token {name}: give exactly one of secret and secret_env")]
    SecretSource { name: String },
    #[error("token {name}: secret_env names {variable}, which is not set")]
    MissingVariable { name: String, variable: String },
    #[error("cannot read the tokens file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the tokens file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("the tokens file {} holds no [[token]]", path.display())]
    NoTokens { path: PathBuf },
}

/// The name of the token a request was let in with, in the extensions
/// of the request and of its answer.
#[derive(Debug, Clone)]
pub struct TokenName(pub Arc<str>);

/// The scope a request needs; `None` for an open probe.
fn required_scope(method: &Method, path: &str, protect_probes: bool) -> Option<Scope> {
    let reads = method == Method::GET || method == Method::HEAD;
    if reads && !protect_probes && matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return None;
    }
    // The console's assets hold no data; what the page calls needs a scope.
    if reads && (path == "/console" || path.starts_with("/console/")) {
        return None;
    }
    // Deploying, rolling back, rebuilding, retrying a reactor's parked
    // events and setting its policy are an operator's.
    let deploys = (path.starts_with("/v1/modules/")
        || path.starts_with("/v1/projections/")
        || path.starts_with("/v1/reactors/"))
        && !reads;
    Some(if path.starts_with("/v1/admin/") || deploys {
        Scope::Admin
    } else if reads {
        Scope::Read
    } else {
        Scope::Write
    })
}

/// Lets a request through if it needs no scope or carries a token with
/// the scope it needs. (Only installed when tokens are configured.)
pub async fn require_token(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let Some(scope) = required_scope(request.method(), path, app.config.protect_probes) else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    let presented = match from_header {
        Some(secret) => Some(secret.to_string()),
        None if path == "/v1/events" => request.uri().query().and_then(access_token),
        None => None,
    };
    match presented.as_deref().and_then(|s| app.config.tokens.find(s)) {
        Some(token) if token.allows(scope) => {
            // On the request for its handler, on the answer for the
            // request log.
            let name = TokenName(token.name.clone());
            request.extensions_mut().insert(name.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(name);
            response
        }
        Some(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token does not have the {scope} scope"),
        )
        .into_response(),
        None => {
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

/// The `access_token` of a query string, decoded.
fn access_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
}

fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_finds_its_token_and_no_other() {
        let tokens = Tokens::new(vec![
            Token::new("reader", "r-secret", &[Scope::Read]).unwrap(),
            Token::new("writer", "w-secret", &[Scope::Read, Scope::Write]).unwrap(),
        ])
        .unwrap();
        assert_eq!(tokens.find("w-secret").map(Token::name), Some("writer"));
        assert_eq!(tokens.find("r-secret").map(Token::name), Some("reader"));
        assert!(tokens.find("w-secreT").is_none());
        assert!(tokens.find("").is_none());
    }

    #[test]
    fn tokens_that_cannot_be_told_apart_are_refused() {
        let same = |a: &str, b: &str| {
            Tokens::new(vec![
                Token::new(a, "one", &[Scope::Read]).unwrap(),
                Token::new(b, "two", &[Scope::Read]).unwrap(),
            ])
        };
        assert!(matches!(same("x", "x"), Err(TokenError::SameName { .. })));
        let shared = Tokens::new(vec![
            Token::new("x", "same", &[Scope::Read]).unwrap(),
            Token::new("y", "same", &[Scope::Write]).unwrap(),
        ]);
        assert!(matches!(shared, Err(TokenError::SameSecret { .. })));
        assert!(matches!(
            Token::new("x", "  ", &[Scope::Read]),
            Err(TokenError::EmptySecret { .. })
        ));
        assert!(matches!(
            Token::new("x", "s", &[]),
            Err(TokenError::NoScopes { .. })
        ));
    }

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        let need = |method: Method, path: &str| required_scope(&method, path, false);
        assert_eq!(need(Method::GET, "/v1/aggregates"), Some(Scope::Read));
        assert_eq!(need(Method::GET, "/v1/events"), Some(Scope::Read));
        assert_eq!(
            need(Method::POST, "/v1/aggregates/A/1/commands/C"),
            Some(Scope::Write)
        );
        assert_eq!(need(Method::POST, "/v1/admin/reload"), Some(Scope::Admin));
        assert_eq!(need(Method::PUT, "/v1/modules/Item"), Some(Scope::Admin));
        assert_eq!(
            need(Method::POST, "/v1/modules/Item/rollback"),
            Some(Scope::Admin)
        );
        assert_eq!(
            need(Method::GET, "/v1/modules/Item/history"),
            Some(Scope::Read)
        );
        assert_eq!(
            need(Method::POST, "/v1/projections/sales/rebuild"),
            Some(Scope::Admin)
        );
        assert_eq!(need(Method::GET, "/v1/projections"), Some(Scope::Read));
        assert_eq!(need(Method::GET, "/v1/reactors"), Some(Scope::Read));
        assert_eq!(
            need(Method::POST, "/v1/reactors/checkout/retry"),
            Some(Scope::Admin)
        );
        assert_eq!(
            need(Method::PUT, "/v1/reactors/checkout/policy"),
            Some(Scope::Admin)
        );
        assert_eq!(need(Method::GET, "/v1/admin/reload"), Some(Scope::Admin));
        assert_eq!(need(Method::GET, "/readyz"), None);
        assert_eq!(need(Method::POST, "/readyz"), Some(Scope::Write));
        assert_eq!(
            required_scope(&Method::GET, "/metrics", true),
            Some(Scope::Read)
        );
    }

    #[test]
    fn the_access_token_is_read_from_the_query_decoded() {
        assert_eq!(
            access_token("from=3&access_token=a%2Bb%3D").as_deref(),
            Some("a+b=")
        );
        assert_eq!(access_token("from=3"), None);
    }
}
