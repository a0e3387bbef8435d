//! `eshost events`: one stream's events (here or on a server), or, with
//! `--all`, the global log read from the store, up to its end or followed,
//! optionally as a durable subscription.

use crate::args::{GlobalArgs, RemoteArgs};
use crate::backend::Backend;
use anyhow::{Result, bail};
use clap::{Args, CommandFactory};
use eshost_read::subscription::{self, Subscription};
use eshost_store::{EventStore, RecordedEvent};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Print an aggregate's events, oldest first, as JSON lines; or, with
/// --all, every stream's events in global position order.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost events FlashSaleItem s1\n  \
    eshost events --all --aggregate FlashSaleItem\n  \
    eshost events --all --from 1234567890 --follow\n  \
    eshost events --all --follow --subscription billing\n\n\
    Positions increase in the order readers see events but are sparse, not a count.\n\
    A reader that resumes with --from set to the last position it printed never\n\
    misses an event, even one whose transaction committed late.")]
pub struct EventsArgs {
    /// Aggregate type, e.g. FlashSaleItem.
    #[arg(required_unless_present = "all")]
    aggregate: Option<String>,
    /// Aggregate instance id.
    #[arg(required_unless_present = "all")]
    id: Option<String>,
    /// Every stream's events, in global position order, read from the store.
    #[arg(long, conflicts_with_all = ["aggregate", "id"])]
    all: bool,
    /// With --all: only events after this position (0: from the first).
    #[arg(long, value_name = "POSITION")]
    from: Option<i64>,
    /// With --all: only this aggregate type's events.
    #[arg(long = "aggregate", id = "only_aggregate", value_name = "NAME")]
    only_aggregate: Option<String>,
    /// With --all: once caught up, keep printing new events until interrupted.
    #[arg(long)]
    follow: bool,
    /// With --all: a durable subscription. Start after its checkpoint in
    /// the store (unless --from is given), and save the checkpoint as
    /// printed events are flushed: run again with the same name, it
    /// resumes there. At least once: events printed after the last save
    /// are printed again.
    #[arg(long, value_name = "NAME")]
    subscription: Option<String>,

    #[command(flatten)]
    remote: RemoteArgs,
}

pub async fn run(global: &GlobalArgs, args: EventsArgs) -> Result<()> {
    if args.all {
        if args.remote.server.is_some() {
            bail!("events --all reads the store directly; drop --server (or ESHOST_SERVER)");
        }
        return global_log(global, args).await;
    }
    if args.from.is_some()
        || args.only_aggregate.is_some()
        || args.follow
        || args.subscription.is_some()
    {
        // clap's `requires` counts a flag's default as present.
        crate::args::Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--from, --aggregate, --follow and --subscription need --all",
            )
            .exit();
    }
    let (Some(aggregate), Some(id)) = (&args.aggregate, &args.id) else {
        bail!("name an aggregate and an id, or pass --all");
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let print = |events: &[RecordedEvent]| {
        for event in events {
            serde_json::to_writer(&mut out, event)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    Backend::choose(global, &args.remote)?
        .events(aggregate, id, print)
        .await?;
    out.flush()?;
    Ok(())
}

/// `eshost events --all`: the global log as JSON lines, read from the
/// store (no guest is loaded), up to the end or, with `--follow`, on and on
/// until Ctrl-C. With a subscription name, it starts after that
/// subscription's checkpoint (unless `--from` says where) and saves the
/// checkpoint each time what it printed is flushed: at least once, so a
/// reader killed between a flush and its checkpoint gets those events again.
async fn global_log(global: &GlobalArgs, args: EventsArgs) -> Result<()> {
    use futures_util::StreamExt;
    let store = global.store().await?;
    let checkpoint = args.subscription.map(|name| format!("subscription:{name}"));
    let after = match (args.from, &checkpoint) {
        (Some(from), _) => from,
        (None, Some(checkpoint)) => store
            .checkpoints()
            .load_checkpoint(checkpoint)
            .await?
            .unwrap_or(0),
        (None, None) => 0,
    };
    let mut out = LogPrinter {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        store: store.clone(),
        checkpoint,
        printed: after,
        saved: after,
    };
    let aggregate = args.only_aggregate;
    if !args.follow {
        let mut after = after;
        loop {
            let page = store
                .log()
                .read_all(after, aggregate.as_deref(), subscription::PAGE)
                .await?;
            for event in &page {
                out.print(event)?;
            }
            out.commit().await?;
            match page.last() {
                Some(last) => after = last.position,
                None => return Ok(()),
            }
        }
    }
    let from = Subscription { after, aggregate };
    let mut events = std::pin::pin!(subscription::follow(store, from));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Written out in a batch every 50 ms: a reader sees new events within
    // that, and a busy log is not one write (or checkpoint) per event.
    let mut flush = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = flush.tick() => out.commit().await?,
            event = events.next() => match event {
                Some(event) => out.print(&event?)?,
                None => break,
            },
        }
    }
    out.commit().await
}

/// Prints the global log and keeps a subscription's checkpoint behind what
/// it has flushed.
struct LogPrinter<W: Write> {
    out: W,
    store: Arc<dyn EventStore>,
    checkpoint: Option<String>,
    /// The position of the last event printed, and of the last saved.
    printed: i64,
    saved: i64,
}

impl<W: Write> LogPrinter<W> {
    fn print(&mut self, event: &RecordedEvent) -> Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.printed = event.position;
        Ok(())
    }

    /// Flushes what was printed, then saves the checkpoint (in that order:
    /// an event is never marked done before it is out).
    async fn commit(&mut self) -> Result<()> {
        self.out.flush()?;
        if let Some(checkpoint) = &self.checkpoint
            && self.printed > self.saved
        {
            self.store
                .checkpoints()
                .save_checkpoint(checkpoint, self.printed)
                .await?;
            self.saved = self.printed;
        }
        Ok(())
    }
}
