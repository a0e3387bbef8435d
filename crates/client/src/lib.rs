//! A client of `eshost serve`: commands, state, events and what is
//! loaded. The command line uses it when a server is configured (`--server
//! URL` / `ESHOST_SERVER`). It depends on the wire types (`eshost-api`) and
//! reqwest, and on nothing of the host: the dependency graph keeps it so
//! (`cargo xtask layering`).

use eshost_api::{
    AggregateInfo, CAUSATION_ID, CORRELATION_ID, CommandOutcome, CommandRequest, ErrorBody,
    EventsPage, IDEMPOTENCY_KEY, MAX_PAGE, RecordedEvent, StateAnswer,
};
use std::time::Duration;

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (its kind and one-line message).
    #[error("{message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
        command_id: Option<String>,
    },

    /// No answer: the server could not be reached, or the connection broke.
    /// For a command, whether it was recorded is unknown: resend it with
    /// the same command id.
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },

    /// The server answered with something that is not the API's JSON.
    #[error("{url}: unexpected answer ({status}): {reason}")]
    Unexpected {
        url: String,
        status: u16,
        reason: String,
    },
}

impl ClientError {
    /// The error kind: the server's, or `transport` / `unexpected`.
    pub fn kind(&self) -> &str {
        match self {
            Self::Api { kind, .. } => kind,
            Self::Transport { .. } => "transport",
            Self::Unexpected { .. } => "unexpected",
        }
    }
}

/// A client of one `eshost serve`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`),
    /// sending `token` as a bearer token if given.
    pub fn new(base: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Transport {
                    url: base.to_string(),
                    reason: "the token is not visible ASCII".into(),
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .default_headers(headers)
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Runs a command, under its id (sent as `Idempotency-Key`): a caller
    /// told "unknown" resends the same request to learn the outcome.
    pub async fn execute(&self, request: &CommandRequest) -> Result<CommandOutcome, ClientError> {
        let path = format!(
            "/v1/aggregates/{}/{}/commands/{}",
            segment(&request.aggregate),
            segment(&request.id),
            segment(&request.command)
        );
        let mut post = self
            .http
            .post(self.url(&path))
            .header(IDEMPOTENCY_KEY, request.command_id.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.payload.clone());
        for (header, value) in [
            (CORRELATION_ID, &request.correlation_id),
            (CAUSATION_ID, &request.causation_id),
        ] {
            if let Some(value) = value {
                post = post.header(header, value);
            }
        }
        self.send(&path, post).await
    }

    /// The aggregate's state and version.
    pub async fn state(&self, aggregate: &str, id: &str) -> Result<StateAnswer, ClientError> {
        let path = format!("/v1/aggregates/{}/{}", segment(aggregate), segment(id));
        self.send(&path, self.http.get(self.url(&path))).await
    }

    /// Every event of a stream, page by page; `each` sees every page in order.
    pub async fn events(
        &self,
        aggregate: &str,
        id: &str,
        mut each: impl FnMut(&[RecordedEvent]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let mut after = 0;
        loop {
            let path = format!(
                "/v1/aggregates/{}/{}/events?after={after}&limit={MAX_PAGE}",
                segment(aggregate),
                segment(id)
            );
            let page: EventsPage = self.send(&path, self.http.get(self.url(&path))).await?;
            each(&page.events).map_err(|e| ClientError::Transport {
                url: self.url(&path),
                reason: format!("writing the output: {e}"),
            })?;
            match page.next_after {
                Some(next) => after = next,
                None => return Ok(()),
            }
        }
    }

    /// The aggregates the server has loaded.
    pub async fn aggregates(&self) -> Result<Vec<AggregateInfo>, ClientError> {
        let path = "/v1/aggregates";
        self.send(path, self.http.get(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let transport = |e: reqwest::Error| ClientError::Transport {
            url: url.clone(),
            reason: one_line(&e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
                url: url.clone(),
                status,
                reason: e.to_string(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => Err(ClientError::Api {
                status,
                kind: error.error.kind,
                message: error.error.message,
                command_id: error.error.command_id,
            }),
            Err(_) => Err(ClientError::Unexpected {
                url,
                status,
                reason: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
        }
    }
}

/// A path segment, percent-encoded (ids may hold any character).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// reqwest's error with its causes, on one line.
fn one_line(error: &reqwest::Error) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::segment("s 1/ü?"), "s%201%2F%C3%BC%3F");
        assert_eq!(super::segment("plain-id_1.x~"), "plain-id_1.x~");
    }
}
