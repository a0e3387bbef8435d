//! The outbound sinks a reactor's deliveries go to: the operator names each
//! and gives its URL and headers (a secret among them); the guest knows
//! only the name. A delivery is an HTTP POST of its JSON body with the
//! action's id as `Idempotency-Key`, so a receiver that keeps the keys it
//! has seen takes each message once, however often it is sent.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long one delivery attempt may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One sink.
#[derive(Debug, Clone)]
pub struct Sink {
    pub url: reqwest::Url,
    /// Sent with every delivery (an `Authorization` header, say).
    pub headers: Vec<(String, String)>,
}

/// The sinks, by name, and the client that delivers to them.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    sinks: BTreeMap<String, Sink>,
    client: reqwest::Client,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The sink took it (a 2xx).
    Taken(u16),
    /// The sink refused it for good (a 4xx other than 408 and 429), or no
    /// sink has that name.
    Refused(String),
    /// Try again later (a 5xx, 408, 429, no answer in time, no connection).
    Later(String),
}

/// Why a sinks file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SinksFileError {
    #[error("{path}: cannot read the sinks file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// One sink as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkEntry {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl Sinks {
    /// Reads a sinks file (TOML): a table per sink, named as reactors name
    /// it, with its `url` (http or https) and optional `headers`. A header
    /// value may take a secret from the environment as `${NAME}`, so the
    /// file itself holds none:
    ///
    /// ```toml
    /// [confirmations]
    /// url = "https://shop.example/hooks/confirmations"
    /// headers = { Authorization = "Bearer ${CONFIRMATIONS_TOKEN}" }
    /// ```
    pub fn load(path: &Path) -> Result<Self, SinksFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SinksFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, |name| std::env::var(name).ok()).map_err(|message| {
            SinksFileError::Invalid {
                path: path.display().to_string(),
                message,
            }
        })
    }

    /// Parses a sinks file's text, reading `${NAME}` from `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let entries: BTreeMap<String, SinkEntry> =
            toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut sinks = BTreeMap::new();
        for (name, entry) in entries {
            let url = reqwest::Url::parse(&entry.url)
                .map_err(|e| format!("sink {name}: url {:?}: {e}", entry.url))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("sink {name}: url {url} is not http or https"));
            }
            let mut headers = Vec::with_capacity(entry.headers.len());
            for (header, value) in entry.headers {
                let value = expand(&value, &env)
                    .map_err(|e| format!("sink {name}: header {header}: {e}"))?;
                reqwest::header::HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("sink {name}: {header:?} is not a header name"))?;
                reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                    format!("sink {name}: header {header}'s value is not valid in HTTP")
                })?;
                headers.push((header, value));
            }
            sinks.insert(name, Sink { url, headers });
        }
        Ok(Self::new(sinks))
    }

    /// The sinks' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    pub fn new(sinks: BTreeMap<String, Sink>) -> Self {
        Self {
            sinks,
            client: reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// One attempt to deliver `body` to the sink `name` under `key`.
    pub async fn deliver(&self, name: &str, key: &str, body: &str) -> Delivered {
        let Some(sink) = self.sinks.get(name) else {
            return Delivered::Refused(format!("no sink named {name:?} is configured"));
        };
        let mut request = self
            .client
            .post(sink.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(body.to_owned());
        for (header, value) in &sink.headers {
            request = request.header(header, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Delivered::Taken(status.as_u16())
                } else if status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Delivered::Later(format!("{name} answered {status}"))
                } else {
                    Delivered::Refused(format!("{name} answered {status}"))
                }
            }
            Err(e) => Delivered::Later(format!("{name}: {e}")),
        }
    }
}

/// `value` with each `${NAME}` replaced by the variable's value.
fn expand(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut expanded = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a `${` without its `}`".to_owned())?;
        let name = &after[..end];
        let found = env(name).ok_or_else(|| format!("the variable {name} is not set"))?;
        expanded.push_str(&found);
        rest = &after[end + 1..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn a_sinks_file_names_each_sink_with_its_url_and_headers_from_the_environment() {
        let sinks = Sinks::parse(
            r#"
            [confirmations]
            url = "https://shop.example/hooks"
            headers = { Authorization = "Bearer ${TOKEN}", X-Shop = "eu" }
            [audit]
            url = "http://127.0.0.1:9000/"
            "#,
            env,
        )
        .unwrap();
        assert_eq!(
            sinks.names().collect::<Vec<_>>(),
            ["audit", "confirmations"]
        );
        let confirmations = &sinks.sinks["confirmations"];
        assert_eq!(
            confirmations.headers,
            [
                ("Authorization".to_owned(), "Bearer s3cret".to_owned()),
                ("X-Shop".to_owned(), "eu".to_owned())
            ]
        );
    }

    #[test]
    fn a_bad_sinks_file_is_one_line_naming_what_is_wrong() {
        for (text, expected) in [
            (
                "[a]\nurl = \"ftp://x/\"",
                "sink a: url ftp://x/ is not http or https",
            ),
            ("[a]\nurl = \"nope\"", "sink a: url \"nope\""),
            (
                "[a]\nurl = \"http://x/\"\nheaders = { A = \"${MISSING}\" }",
                "the variable MISSING is not set",
            ),
            (
                "[a]\nurl = \"http://x/\"\nheaders = { A = \"${TOKEN\" }",
                "without its",
            ),
            (
                "[a]\nurl = \"http://x/\"\nretries = 3",
                "unknown field `retries`",
            ),
            ("[a]\n", "missing field `url`"),
        ] {
            let error = Sinks::parse(text, env)
                .err()
                .unwrap_or_else(|| panic!("{text}"));
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
