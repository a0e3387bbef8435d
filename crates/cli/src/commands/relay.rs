//! `eshost relay`: the global log published to NATS JetStream, each event
//! once, in order.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::Args;
use eshost_read::relay;

/// Publish every event, in global order, to NATS JetStream until
/// Ctrl-C: subject PREFIX.{aggregate}.{id}, each event once in the
/// stream, resuming after a restart where the stream left off.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
    eshost relay --nats nats://127.0.0.1:4222 --database-url postgres://postgres@127.0.0.1/postgres\n\n\
    Each message is the event as `events --all` prints it, with its position as\n\
    Nats-Msg-Id. Names in subjects keep ASCII letters, digits, - and _; other bytes\n\
    are written %XX (an id a.b becomes a%2Eb).")]
pub struct RelayArgs {
    /// The NATS server.
    #[arg(long, env = "ESHOST_NATS", value_name = "URL")]
    nats: String,
    /// Subjects are PREFIX.{aggregate}.{id}.
    #[arg(
        long,
        env = "ESHOST_RELAY_SUBJECT_PREFIX",
        default_value = "eshost.events"
    )]
    subject_prefix: String,
    /// The JetStream stream, created over PREFIX.> if it does not exist.
    #[arg(long, env = "ESHOST_RELAY_STREAM", default_value = "ESHOST_EVENTS")]
    stream: String,
    /// The relay's name: its checkpoint in the store is relay:NAME.
    #[arg(long, env = "ESHOST_RELAY_NAME", default_value = "relay")]
    name: String,
}

impl From<RelayArgs> for relay::RelayConfig {
    fn from(args: RelayArgs) -> Self {
        Self {
            nats_url: args.nats,
            subject_prefix: args.subject_prefix,
            stream: args.stream,
            name: args.name,
        }
    }
}

pub async fn run(global: &GlobalArgs, args: RelayArgs) -> Result<()> {
    let store = global.store().await?;
    let stop = async {
        // An error here means no signal handler: run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    Ok(relay::run(store, args.into(), stop).await?)
}
