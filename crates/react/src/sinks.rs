//! The outbound sinks a reactor's deliveries go to: the operator names each
//! and gives its URL and headers (a secret among them); the guest knows
//! only the name. A delivery is an HTTP POST of its JSON body with the
//! action's id as `Idempotency-Key`, so a receiver that keeps the keys it
//! has seen takes each message once, however often it is sent.

use std::collections::BTreeMap;
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

impl Sinks {
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
