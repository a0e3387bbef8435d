//! `eshost serve`: parse the server's flags, bind, serve until a signal.

use super::GlobalArgs;
use crate::dispatch::RetryPolicy;
use crate::server::{self, ServerConfig};
use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

pub const HELP: &str = "\
Examples:
  eshost serve
  eshost serve --listen 0.0.0.0:8080 --database-url postgres://postgres@127.0.0.1/postgres
  curl -X POST localhost:8080/v1/aggregates/FlashSaleItem/s1/commands/CreateFlashSale \\
       -H 'Idempotency-Key: create-s1' -d '{\"initialStock\":3}'

Routes:
  POST /v1/aggregates/{aggregate}/{id}/commands/{command}   body: the payload (JSON)
  GET  /v1/aggregates                                     the loaded aggregates
  GET  /v1/aggregates/{aggregate}/{id}                    state and version
  GET  /v1/aggregates/{aggregate}/{id}/events?after=N&limit=M
  GET  /healthz, /readyz";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: put a reverse proxy in
    /// front to serve other machines.
    #[arg(long, env = "ESHOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// How long a command may take, in milliseconds, before its caller is
    /// answered 504 (outcome unknown: resend with the same Idempotency-Key).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub command_timeout_ms: u64,

    /// From SIGTERM or SIGINT to exit, in seconds: accepted requests finish
    /// and queues drain within this.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_s: u64,

    /// Conflict retries per command before it fails (409 conflict).
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<()> {
    let retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    let host = global.host(retry).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = ServerConfig {
        command_timeout: Duration::from_millis(args.command_timeout_ms),
        // The body is the command payload: the payload limit, plus room for
        // whitespace around it.
        max_body_bytes: global.limits.max_payload_bytes.saturating_add(1024),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_s),
        token: global.token.clone().filter(|t| !t.is_empty()),
    };
    // One line on stdout once listening, so scripts (and tests) can wait for it.
    println!("eshost listening on http://{}", listener.local_addr()?);
    server::serve(listener, host, config, server::termination_signal()).await?;
    Ok(())
}
