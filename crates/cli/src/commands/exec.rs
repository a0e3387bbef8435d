//! `eshost exec`: run one command, here or on a server, and print the
//! events it appended.

use crate::args::{GlobalArgs, RemoteArgs};
use crate::backend::Backend;
use crate::exit;
use anyhow::{Context, Result};
use clap::Args;
use eshost::dispatch::{CommandRequest, RetryPolicy};
use std::io::Read;

/// Run one command and print the events it appended, as JSON lines.
///
/// A recorded rejection (such as PurchaseRejected) is a success. A command
/// the aggregate refuses appends nothing and exits 1. Run here in queued
/// mode, the command takes its turn on the aggregate across processes, so
/// that many `exec` processes on one aggregate queue instead of racing.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost exec FlashSaleItem s1 CreateFlashSale '{\"initialStock\":3}'\n  \
    eshost exec FlashSaleItem s1 PurchaseItem @purchase.json\n  \
    echo '{\"buyerId\":\"b1\",\"quantity\":1}' | eshost exec FlashSaleItem s1 PurchaseItem -")]
pub struct ExecArgs {
    /// Aggregate type, e.g. FlashSaleItem.
    aggregate: String,
    /// Aggregate instance id.
    id: String,
    /// Command name, e.g. PurchaseItem.
    command: String,
    /// JSON text, @FILE to read it from a file, or - for stdin [default: {}].
    payload: Option<String>,
    /// Identifies this command [default: a new UUID]. Sent again with the
    /// same id, the command appends nothing and prints the events first
    /// recorded: safe to retry after a timeout. At most 1024 bytes.
    #[arg(long)]
    command_id: Option<String>,
    /// Recorded in the events' metadata [default: the command id].
    #[arg(long)]
    correlation_id: Option<String>,
    /// Recorded in the events' metadata [default: the command id].
    #[arg(long)]
    causation_id: Option<String>,
    /// Conflict retries before giving up.
    #[arg(long, env = "ESHOST_MAX_RETRIES", default_value_t = 5)]
    max_retries: u32,
    /// Print one JSON object, the HTTP API's answer: `command_id`,
    /// `replayed`, `retries` and the `events`.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

pub async fn run(global: &GlobalArgs, args: ExecArgs) -> Result<()> {
    // Read the input first: a bad @file fails before anything is opened.
    let payload = read_payload(args.payload.as_deref())?;
    // The id is settled with the request, so that a failure can name it:
    // resending with it is how a caller learns the outcome of a command
    // left unknown.
    let request = CommandRequest {
        correlation_id: args.correlation_id,
        causation_id: args.causation_id,
        ..CommandRequest::new(args.aggregate, args.id, args.command, payload)
            .with_command_id(args.command_id)
    };
    let command_id = request.command_id.to_string();
    let retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    let backend = Backend::choose(global, &args.remote)?;
    let outcome = match backend.execute(&request, retry).await {
        Ok(outcome) => outcome,
        Err(error) => {
            return Err(exit::CommandFailed {
                command_id,
                resend: exit::worth_resending(&error),
                error,
            }
            .into());
        }
    };
    if outcome.replayed {
        eprintln!(
            "command id {command_id} was already recorded: nothing appended; its events follow"
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
        return Ok(());
    }
    for event in &outcome.events {
        println!("{}", serde_json::to_string(event)?);
    }
    Ok(())
}

/// JSON text as given, `@FILE`, or `-` for stdin; absent means `{}`.
fn read_payload(payload: Option<&str>) -> Result<String> {
    match payload {
        None => Ok("{}".to_string()),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the payload from stdin")?;
            Ok(text)
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read payload file {path}")),
            None => Ok(arg.to_string()),
        },
    }
}
