//! The relay to NATS JetStream: every event of the global log, in position
//! order, published to `PREFIX.{aggregate}.{id}`, each in the JetStream
//! stream exactly once.
//!
//! Exactly once holds by construction, not by the duplicate window alone:
//! each message carries its position as `Nats-Msg-Id` and the previous
//! position as `Nats-Expected-Last-Msg-Id`, so the stream refuses anything
//! but the next event, and a relay (re)starting reads the last message's id
//! and goes on after it. A relay killed mid-page resends nothing the stream
//! holds, and a second relay on the same stream is refused rather than
//! interleaved. The position is also saved as the checkpoint `relay:NAME`
//! in the store after each page, for whoever watches the relay's progress.
//! An event that carries its command's trace puts it on its message as the
//! `traceparent` header.

use crate::subscription::{Follower, MAX_ERROR_BACKOFF, POLL_INTERVAL, Subscription};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use eshost_store::StoreError;
use eshost_store::{EventStore, RecordedEvent};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long JetStream remembers message ids, for a publish resent after a
/// lost acknowledgement.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What the relay publishes, and where.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// Subjects are `PREFIX.{aggregate}.{id}`.
    pub subject_prefix: String,
    /// The JetStream stream, created (over `PREFIX.>`) if it does not exist.
    pub stream: String,
    /// The relay's checkpoint is saved as `relay:NAME`.
    pub name: String,
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream's last message has no position for an id: something other
    /// than a relay publishes to it.
    #[error("stream {stream}: its last message (sequence {sequence}) was not published by a relay")]
    Foreign { stream: String, sequence: u64 },
}

impl RelayError {
    fn nats(error: impl std::fmt::Display) -> Self {
        Self::Nats(error.to_string())
    }

    /// Worth waiting out and resuming: NATS reconnects on its own, a store
    /// error may pass. A foreign stream or a store that refuses will not.
    fn is_transient(&self) -> bool {
        match self {
            Self::Nats(_) => true,
            Self::Store(e) => e.is_transient(),
            Self::Foreign { .. } => false,
        }
    }
}

/// Relays events until `stop` completes. Connects once (a wrong URL fails
/// at once), then survives NATS and store outages: after each, it resumes
/// after the last message the stream holds.
pub async fn run(
    store: Arc<dyn EventStore>,
    config: RelayConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    let client = async_nats::connect(&config.nats_url)
        .await
        .map_err(RelayError::nats)?;
    let relay = Relay {
        store,
        jetstream: jetstream::new(client),
        config,
    };
    tokio::pin!(stop);
    let mut backoff = POLL_INTERVAL;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            result = relay.relay() => match result {
                Ok(never) => match never {},
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "the relay stopped; resuming after the stream's last message");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
                Err(e) => return Err(e),
            },
        }
    }
}

struct Relay {
    store: Arc<dyn EventStore>,
    jetstream: jetstream::Context,
    config: RelayConfig,
}

impl Relay {
    /// Publishes page after page, from after the stream's last message;
    /// returns only with an error.
    async fn relay(&self) -> Result<std::convert::Infallible, RelayError> {
        let mut after = self.last_published().await?;
        let checkpoint = format!("relay:{}", self.config.name);
        info!(
            stream = %self.config.stream,
            after,
            "relaying the global log to NATS"
        );
        let from = Subscription {
            after,
            aggregate: None,
        };
        let mut follower = Follower::new(self.store.clone(), from, None);
        loop {
            let page = follower.next_page().await?;
            // Published in order, one acknowledgement awaited per page.
            let mut acks = Vec::with_capacity(page.len());
            for event in &page {
                acks.push(self.publish(event, after).await?);
                after = event.position;
            }
            for ack in acks {
                ack.await.map_err(RelayError::nats)?;
            }
            self.store
                .checkpoints()
                .save_checkpoint(&checkpoint, after)
                .await?;
        }
    }

    /// Sends one event, to be stored only right after `previous`.
    async fn publish(
        &self,
        event: &RecordedEvent,
        previous: i64,
    ) -> Result<jetstream::context::PublishAckFuture, RelayError> {
        let body = serde_json::to_vec(event).map_err(RelayError::nats)?;
        let mut message = PublishMessage::build()
            .payload(body.into())
            .message_id(event.position.to_string());
        if previous > 0 {
            message = message.expected_last_message_id(previous.to_string());
        }
        if let Some(traceparent) = event.traceparent() {
            // The command's trace goes on with whoever consumes the message.
            message = message.header(eshost_core::event::TRACEPARENT, traceparent);
        }
        self.jetstream
            .send_publish(subject(&self.config.subject_prefix, event), message)
            .await
            .map_err(RelayError::nats)
    }

    /// The position of the last event the stream holds (0 when it holds
    /// none), creating the stream if it does not exist.
    async fn last_published(&self) -> Result<i64, RelayError> {
        let config = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let mut stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(RelayError::nats)?;
        let last = stream
            .info()
            .await
            .map_err(RelayError::nats)?
            .state
            .last_sequence;
        if last == 0 {
            return Ok(0);
        }
        let message = stream
            .get_raw_message(last)
            .await
            .map_err(RelayError::nats)?;
        message
            .headers
            .get("Nats-Msg-Id")
            .and_then(|id| id.as_str().parse().ok())
            .ok_or_else(|| RelayError::Foreign {
                stream: self.config.stream.clone(),
                sequence: last,
            })
    }
}

/// `PREFIX.{aggregate}.{id}`, each name made one subject token: bytes
/// other than ASCII letters, digits, `-` and `_` are written `%XX`, so a
/// `.`, `*`, `>` or space in an id cannot split or widen the subject.
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    format!("{prefix}.{}.{}", token(&event.aggregate), token(&event.id))
}

fn token(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("%{byte:02X}"));
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::token;

    #[test]
    fn a_name_becomes_one_subject_token() {
        assert_eq!(token("FlashSaleItem"), "FlashSaleItem");
        assert_eq!(token("a.b c*>%"), "a%2Eb%20c%2A%3E%25");
        assert_eq!(token("é"), "%C3%A9");
    }
}
