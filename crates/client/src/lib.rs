//! A client of `eshost serve`: commands, state, events, what is loaded,
//! and deployments. The command line uses it when a server is configured (`--server
//! URL` / `ESHOST_SERVER`). It depends on the wire types (`eshost-api`) and
//! reqwest, and on nothing of the host: the dependency graph keeps it so
//! (`cargo xtask layering`).

use eshost_api::{
    AggregateInfo, CAUSATION_ID, CORRELATION_ID, CommandOutcome, CommandRequest, ComponentKind,
    DeployAnswer, Deployment, EventsPage, IDEMPOTENCY_KEY, MAX_PAGE, Problem, RecordedEvent,
    StateAnswer,
};
use reqwest::Url;
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

    /// The request cannot be put in a URL (an id of `.` or `..`); nothing
    /// was sent. The message is the host's own for such an id.
    #[error("{0}")]
    Unsendable(String),

    /// The client cannot be made as asked (a CA file that holds no
    /// certificate); nothing was sent.
    #[error("{0}")]
    Config(String),

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
            Self::Unsendable(_) => "invalid_id",
            Self::Config(_) => "config",
            Self::Unexpected { .. } => "unexpected",
        }
    }
}

/// A client of one `eshost serve`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

/// How a [`Client`] reaches its server, beside its URL.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// PEM certificates to trust as roots beside the system's, for a
    /// server whose certificate a private CA signed (or a self-signed one).
    pub ca_pem: Option<Vec<u8>>,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`, or
    /// `https://...`), sending `token` as a bearer token if given.
    pub fn new(base: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::with_options(
            base,
            &ClientOptions {
                token: token.map(str::to_owned),
                ..ClientOptions::default()
            },
        )
    }

    /// A client of the server at `base`, with `options`.
    pub fn with_options(base: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::Transport {
            url: base.to_string(),
            reason,
        };
        let parsed = Url::parse(base).map_err(|e| invalid(format!("not a URL: {e}")))?;
        if parsed.cannot_be_a_base() || !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("expected http://HOST:PORT".into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = options.token.as_deref().filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("the token is not visible ASCII".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .default_headers(headers);
        if let Some(pem) = &options.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ClientError::Config(format!("the CA certificates are not PEM: {e}"))
            })?;
            if roots.is_empty() {
                return Err(ClientError::Config(
                    "the CA certificates hold no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder.build().map_err(|e| invalid(e.to_string()))?;
        Ok(Self { http, base: parsed })
    }

    /// Runs a command, under its id (sent as `Idempotency-Key`): a caller
    /// told "unknown" resends the same request to learn the outcome.
    pub async fn execute(&self, request: &CommandRequest) -> Result<CommandOutcome, ClientError> {
        let url = self.url(
            &[
                ("aggregate type", &request.aggregate),
                ("aggregate id", &request.id),
                ("", "commands"),
                ("command name", &request.command),
            ],
            None,
        )?;
        let mut post = self
            .http
            .post(url.clone())
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
        self.send(url, post).await
    }

    /// The aggregate's state and version.
    pub async fn state(&self, aggregate: &str, id: &str) -> Result<StateAnswer, ClientError> {
        let url = self.url(&[("aggregate type", aggregate), ("aggregate id", id)], None)?;
        self.send(url.clone(), self.http.get(url)).await
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
            let url = self.url(
                &[
                    ("aggregate type", aggregate),
                    ("aggregate id", id),
                    ("", "events"),
                ],
                Some(&format!("after={after}&limit={MAX_PAGE}")),
            )?;
            let page: EventsPage = self.send(url.clone(), self.http.get(url.clone())).await?;
            each(&page.events).map_err(|e| ClientError::Transport {
                url: url.to_string(),
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
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| self.not_a_base())?
            .pop_if_empty()
            .extend(["v1", "aggregates"]);
        self.send(url.clone(), self.http.get(url)).await
    }

    /// Deploys a component as the aggregate or projection `name`. For an
    /// aggregate the server runs the upgrade check and, if it passes,
    /// serves it; a projection runs wherever projections run. Every server
    /// on the store follows within about a second. Needs an admin token.
    pub async fn deploy(
        &self,
        kind: ComponentKind,
        name: &str,
        component: Vec<u8>,
    ) -> Result<DeployAnswer, ClientError> {
        let url = self.deployable_url(kind, name, None)?;
        let request = self
            .http
            .put(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(component);
        self.send(url, request).await
    }

    /// Brings back the version of `name` live before the current one.
    pub async fn rollback(
        &self,
        kind: ComponentKind,
        name: &str,
    ) -> Result<DeployAnswer, ClientError> {
        let url = self.deployable_url(kind, name, Some("rollback"))?;
        self.send(url.clone(), self.http.post(url)).await
    }

    /// The deployments of `name`, newest first.
    pub async fn deployments(
        &self,
        kind: ComponentKind,
        name: &str,
    ) -> Result<Vec<Deployment>, ClientError> {
        let url = self.deployable_url(kind, name, Some("history"))?;
        self.send(url.clone(), self.http.get(url)).await
    }

    /// `/v1/modules/{name}[/{action}]` (an aggregate),
    /// `/v1/projections/{name}[/{action}]` or `/v1/reactors/{name}[/{action}]`
    /// under the base URL.
    fn deployable_url(
        &self,
        kind: ComponentKind,
        name: &str,
        action: Option<&str>,
    ) -> Result<Url, ClientError> {
        if matches!(name, "." | "..") {
            return Err(ClientError::Unsendable(format!(
                "{} name must not be . or .. (a URL path cannot carry it)",
                match kind {
                    ComponentKind::Aggregate => "an aggregate",
                    ComponentKind::Projection => "a projection",
                    ComponentKind::Reactor => "a reactor",
                }
            )));
        }
        let collection = match kind {
            ComponentKind::Aggregate => "modules",
            ComponentKind::Projection => "projections",
            ComponentKind::Reactor => "reactors",
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| self.not_a_base())?
            .pop_if_empty()
            .extend(["v1", collection, name])
            .extend(action);
        Ok(url)
    }

    /// `/v1/aggregates/{segments...}?{query}` under the base URL. Each
    /// segment is `(what it names, text)`, or `("", literal)`, and is
    /// percent-encoded by the url crate (ids may hold any character).
    /// `.` and `..` are refused: a URL path cannot carry them (every URL
    /// parser collapses them, escaped or not), and the host refuses them
    /// as ids alike.
    fn url(
        &self,
        segments: &[(&'static str, &str)],
        query: Option<&str>,
    ) -> Result<Url, ClientError> {
        if let Some((what, _)) = segments
            .iter()
            .find(|(_, text)| matches!(*text, "." | ".."))
        {
            return Err(ClientError::Unsendable(format!(
                "{what} must not be . or .. (a URL path cannot carry it)"
            )));
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| self.not_a_base())?
            .pop_if_empty()
            .extend(["v1", "aggregates"])
            .extend(segments.iter().map(|(_, text)| text));
        url.set_query(query);
        Ok(url)
    }

    fn not_a_base(&self) -> ClientError {
        ClientError::Transport {
            url: self.base.to_string(),
            reason: "expected http://HOST:PORT".into(),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let url = url.to_string();
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
        match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) => Err(ClientError::Api {
                status,
                kind: problem.kind,
                message: problem.detail,
                command_id: problem.command_id,
            }),
            Err(_) => Err(ClientError::Unexpected {
                url,
                status,
                reason: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
        }
    }
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
    use super::*;

    #[test]
    fn names_are_percent_encoded_as_path_segments() {
        let client = Client::new("http://127.0.0.1:8080/", None).unwrap();
        let url = client
            .url(
                &[
                    ("aggregate type", "Item"),
                    ("aggregate id", "s 1/ü?#%2F..x"),
                    ("", "events"),
                ],
                Some("after=0"),
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/v1/aggregates/Item/s%201%2F%C3%BC%3F%23%252F..x/events?after=0"
        );
        let refused = client.url(&[("aggregate id", "..")], None);
        assert!(matches!(refused, Err(ClientError::Unsendable(_))));
        assert!(Client::new("127.0.0.1:8080", None).is_err());
    }
}
