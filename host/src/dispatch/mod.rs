//! Running commands: load, decide, append with the expected version; on a
//! conflict catch up on the new events only, decide again, append again.
//!
//! [`Host`] is the library's front door: it owns the loaded modules, the event
//! store, the cache of hydrated aggregates and the retry policy.

mod cache;
mod retry;

pub use cache::AggregateCache;
pub use retry::RetryPolicy;

use crate::error::{CommandError, GuestError, StoreError};
use crate::runtime::instance::DecidedEvent;
use crate::runtime::{Hydrated, LoadedComponent, Modules};
use crate::store::{EventStore, NewEvent, RecordedEvent, StreamId};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{debug, warn};

/// A command addressed to one aggregate instance.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub aggregate: String,
    pub id: String,
    pub command: String,
    /// JSON text.
    pub payload: String,
    /// Identifies this command; generated when absent.
    pub command_id: Option<String>,
    /// The conversation this command belongs to; defaults to the command id.
    pub correlation_id: Option<String>,
    /// What caused this command; defaults to the command id.
    pub causation_id: Option<String>,
}

impl CommandRequest {
    pub fn new(
        aggregate: impl Into<String>,
        id: impl Into<String>,
        command: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            aggregate: aggregate.into(),
            id: id.into(),
            command: command.into(),
            payload: payload.into(),
            command_id: None,
            correlation_id: None,
            causation_id: None,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, Serialize)]
pub struct CommandOutcome {
    pub command_id: String,
    /// The events appended, with their sequence numbers. May be empty.
    pub events: Vec<RecordedEvent>,
    /// How many times a conflict sent the command round again.
    pub retries: u32,
}

/// Counters over the host's lifetime.
#[derive(Debug, Default)]
pub struct HostStats {
    pub conflicts: AtomicU64,
}

pub struct Host {
    modules: Modules,
    store: Arc<dyn EventStore>,
    cache: AggregateCache,
    retry: RetryPolicy,
    stats: HostStats,
}

impl Host {
    pub fn new(modules: Modules, store: Arc<dyn EventStore>, retry: RetryPolicy) -> Self {
        Self {
            modules,
            store,
            cache: AggregateCache::default(),
            retry,
            stats: HostStats::default(),
        }
    }

    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    pub fn cached_aggregates(&self) -> usize {
        self.cache.len()
    }

    fn component(&self, aggregate: &str) -> Result<&Arc<LoadedComponent>, CommandError> {
        self.modules
            .get(aggregate)
            .ok_or_else(|| CommandError::UnknownAggregate {
                name: aggregate.to_string(),
                loaded: self.modules.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Runs one command to completion. Rejection events are ordinary events:
    /// they come back in [`CommandOutcome::events`], not as errors.
    pub async fn execute(&self, request: &CommandRequest) -> Result<CommandOutcome, CommandError> {
        let component = self.component(&request.aggregate)?;
        if !component.accepts(&request.command) {
            return Err(CommandError::UnknownCommand {
                aggregate: request.aggregate.clone(),
                command: request.command.clone(),
                accepted: component.commands.join(", "),
            });
        }
        let max_payload = component.limits.max_payload_bytes;
        if request.payload.len() > max_payload {
            return Err(CommandError::PayloadTooLarge {
                command: request.command.clone(),
                size: request.payload.len(),
                limit: max_payload,
            });
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&request.payload) {
            return Err(CommandError::PayloadNotJson {
                command: request.command.clone(),
                reason: e.to_string(),
            });
        }
        let stream = StreamId::new(&request.aggregate, &request.id);
        let command_id = request
            .command_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let metadata = serde_json::json!({
            "commandId": command_id,
            "correlationId": request.correlation_id.as_deref().unwrap_or(&command_id),
            "causationId": request.causation_id.as_deref().unwrap_or(&command_id),
            "aggregateVersion": component.version,
            "componentDigest": component.digest,
        })
        .to_string();

        let (mut aggregate, mut up_to_date) = match self.cache.take(&stream) {
            Some(cached) => (cached, false),
            None => (self.hydrate(component, &stream).await?, true),
        };
        let mut retries = 0;
        loop {
            let decided = match aggregate.decide(&request.command, &request.payload) {
                Ok(decided) => decided,
                // The instance may have trapped: it is dropped, never cached.
                Err(e) => return Err(e.into()),
            };
            // An outcome that records nothing is not guarded by the unique key,
            // so it must be decided against the latest stream: a cached
            // instance catches up first and decides again if it was behind.
            let records_nothing = !matches!(&decided, Ok(events) if !events.is_empty());
            if records_nothing && !up_to_date {
                up_to_date = true;
                if self.catch_up(&mut aggregate, &stream).await? > 0 {
                    continue;
                }
            }
            let events = match decided {
                Ok(events) => events,
                Err(refusal) => {
                    self.cache.put(stream, aggregate);
                    return Err(CommandError::Refused {
                        aggregate: request.aggregate.clone(),
                        id: request.id.clone(),
                        command: request.command.clone(),
                        refusal,
                    });
                }
            };
            let new_events = to_new_events(&events, &metadata);
            match self
                .store
                .append(&stream, aggregate.version, &new_events)
                .await
            {
                Ok(recorded) => {
                    // The events are recorded whatever happens next; a guest
                    // that cannot apply its own events loses its cache entry,
                    // and the next command meets the failure on replay.
                    match aggregate.apply_decided(&events) {
                        Ok(()) => self.cache.put(stream, aggregate),
                        Err(e) => warn!(%stream, error = %e, "instance dropped after append"),
                    }
                    return Ok(CommandOutcome {
                        command_id,
                        events: recorded,
                        retries,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    if retries >= self.retry.max_retries {
                        warn!(%stream, retries, "retries exhausted");
                        return Err(CommandError::RetriesExhausted {
                            aggregate: request.aggregate.clone(),
                            id: request.id.clone(),
                            retries,
                        });
                    }
                    retries += 1;
                    let delay = self.retry.backoff(retries);
                    debug!(%stream, retries, ?delay, "conflict; retrying");
                    tokio::time::sleep(delay).await;
                    self.catch_up(&mut aggregate, &stream).await?;
                    up_to_date = true;
                }
                Err(other) => {
                    // The instance is intact (nothing was applied): keep it.
                    self.cache.put(stream, aggregate);
                    return Err(other.into());
                }
            }
        }
    }

    /// The aggregate's current state as the guest renders it.
    pub async fn state(
        &self,
        aggregate: &str,
        id: &str,
    ) -> Result<serde_json::Value, CommandError> {
        let component = self.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let mut hydrated = match self.cache.take(&stream) {
            Some(mut cached) => {
                self.catch_up(&mut cached, &stream).await?;
                cached
            }
            None => self.hydrate(component, &stream).await?,
        };
        let json = hydrated.to_json()?;
        self.cache.put(stream, hydrated);
        serde_json::from_str(&json).map_err(|e| {
            CommandError::Guest(GuestError::Trap {
                aggregate: aggregate.to_string(),
                call: "to-json",
                message: format!("returned text that is not JSON: {e}"),
            })
        })
    }

    /// Every event of one stream, in order.
    pub async fn events(
        &self,
        aggregate: &str,
        id: &str,
    ) -> Result<Vec<RecordedEvent>, CommandError> {
        self.component(aggregate)?;
        Ok(self.store.load(&StreamId::new(aggregate, id), 0).await?)
    }

    /// A new instance with the whole stream applied.
    async fn hydrate(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
    ) -> Result<Hydrated, CommandError> {
        let mut hydrated = Hydrated::new(component.clone(), &stream.id)?;
        self.catch_up(&mut hydrated, stream).await?;
        Ok(hydrated)
    }

    /// Applies the events recorded after the instance's version; returns how many.
    async fn catch_up(
        &self,
        aggregate: &mut Hydrated,
        stream: &StreamId,
    ) -> Result<usize, CommandError> {
        let events = self.store.load(stream, aggregate.version).await?;
        aggregate.apply_recorded(&events)?;
        Ok(events.len())
    }
}

fn to_new_events(events: &[DecidedEvent], metadata: &str) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| NewEvent {
            name: e.name.clone(),
            payload: e.payload.clone(),
            metadata: metadata.to_string(),
        })
        .collect()
}
