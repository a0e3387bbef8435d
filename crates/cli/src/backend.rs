//! Where `exec`, `state`, `events` and `aggregates` run: in this process,
//! on the store and the modules the global options name, or on an `eshost
//! serve` (`--server`). The choice is made once, in [`Backend::choose`];
//! the subcommands print the same thing and exit with the same codes
//! either way.

use crate::args::{GlobalArgs, RemoteArgs, drained};
use anyhow::{Context, Result};
use eshost::dispatch::{CommandOutcome, CommandRequest, REPLAY_PAGE, RetryPolicy};
use eshost_client::{Client, ClientOptions};
use eshost_core::{AggregateInfo, JsonText, RecordedEvent};

pub enum Backend<'a> {
    /// Open the store and load the modules here, for this one request.
    Local(&'a GlobalArgs),
    /// Send the request to a server.
    Remote(Client),
}

impl<'a> Backend<'a> {
    pub fn choose(global: &'a GlobalArgs, remote: &RemoteArgs) -> Result<Self> {
        Ok(match &remote.server {
            Some(server) => {
                let ca_pem = match &remote.ca_file {
                    Some(path) => Some(
                        std::fs::read(path)
                            .with_context(|| format!("--ca-file {}", path.display()))?,
                    ),
                    None => None,
                };
                let options = ClientOptions {
                    token: remote.token.clone(),
                    ca_pem,
                };
                Self::Remote(Client::with_options(server, &options)?)
            }
            None => Self::Local(global),
        })
    }

    pub async fn aggregates(&self) -> Result<Vec<AggregateInfo>> {
        match self {
            Self::Local(global) => Ok(global.modules()?.describe()),
            Self::Remote(client) => Ok(client.aggregates().await?),
        }
    }

    /// Runs one command. Here, in queued mode, the host takes the stream's
    /// turn across processes first (one-shot processes take turns rather
    /// than race).
    pub async fn execute(
        &self,
        request: &CommandRequest,
        retry: RetryPolicy,
    ) -> Result<CommandOutcome> {
        match self {
            Self::Local(global) => {
                let host = global.host_for_one_command(retry).await?;
                let result = host.execute(request).await.map_err(anyhow::Error::from);
                drained(&host, result).await
            }
            Self::Remote(client) => Ok(client.execute(request).await?),
        }
    }

    /// The aggregate's state as the component rendered it; an error if it
    /// has no events.
    pub async fn state(&self, aggregate: &str, id: &str) -> Result<JsonText> {
        match self {
            Self::Local(global) => {
                let host = global.host(RetryPolicy::default()).await?;
                let result = match host.render(aggregate, id).await {
                    Ok((state, _version)) => JsonText::new(state).map_err(|e| {
                        anyhow::anyhow!("{aggregate}: to-json returned text that is not JSON: {e}")
                    }),
                    Err(e) => Err(e.into()),
                };
                drained(&host, result).await
            }
            Self::Remote(client) => Ok(client.state(aggregate, id).await?.state),
        }
    }

    /// The stream's events, oldest first, handed to `print` a page at a
    /// time: a stream of millions of events is never in memory at once.
    pub async fn events(
        &self,
        aggregate: &str,
        id: &str,
        mut print: impl FnMut(&[RecordedEvent]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Self::Local(global) => {
                let host = global.host(RetryPolicy::default()).await?;
                let printed = async {
                    let mut after = 0;
                    loop {
                        let page = host
                            .events_page(aggregate, id, after, Some(REPLAY_PAGE))
                            .await?;
                        print(&page)?;
                        match page.last() {
                            Some(last) if page.len() as u64 == REPLAY_PAGE => after = last.sequence,
                            _ => return Ok(()),
                        }
                    }
                };
                let result = printed.await;
                drained(&host, result).await
            }
            Self::Remote(client) => Ok(client
                .events(aggregate, id, |page| {
                    print(page).map_err(|e| std::io::Error::other(format!("{e:#}")))
                })
                .await?),
        }
    }
}
