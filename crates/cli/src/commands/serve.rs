//! `eshost serve`: the HTTP API over a host until SIGTERM or SIGINT, then a
//! drain.

use crate::args::GlobalArgs;
use anyhow::{Context, Result};
use clap::Args;
use eshost::dispatch::{Host, RetryPolicy};
use eshost::upgrade::Selection;
use eshost_read::supervisor::Supervisor;
use eshost_server::auth::{Scope, Token, Tokens};
use eshost_server::connections::{self, ConnectionLimits};
use eshost_server::tls::Tls;
use eshost_server::{self as server, App, ServerConfig};
use eshost_wasm::Modules;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HELP: &str = "\
Examples:
  eshost serve
  ESHOST_TOKEN=... eshost serve --listen 0.0.0.0:8080 --database-url postgres://postgres@127.0.0.1/postgres
  eshost serve --tokens tokens.toml
  eshost serve --tls-cert server.pem --tls-key server-key.pem
  curl -X POST localhost:8080/v1/aggregates/FlashSaleItem/s1/commands/CreateFlashSale \\
       -H 'Content-Type: application/json' -H 'Idempotency-Key: create-s1' -d '{\"initialStock\":3}'

Routes:
  POST /v1/aggregates/{aggregate}/{id}/commands/{command}   body: the payload (JSON)
  GET  /v1/aggregates                                     the loaded aggregates
  GET  /v1/aggregates/{aggregate}/{id}                    state and version
  GET  /v1/aggregates/{aggregate}/{id}/events?after=N&limit=M
  GET  /v1/events?from=P (or ?tail=N)                     the global log, as Server-Sent Events
  GET  /v1/views/{projection}/{key}                       a projection's document
  POST /v1/admin/reload                                   reload the modules directory now
  PUT  /v1/modules/{name}                                 deploy a component (checked first)
  POST /v1/modules/{name}/rollback                        bring back the previous version
  GET  /v1/modules/{name}/history                         the deployments, newest first
  GET  /v1/stats                                          the last 15 minutes, sampled every 10 s
  GET  /v1/projections                                    each projection's status, position and lag
  POST /v1/projections/{name}/rebuild                     rebuild a view (with --run-projections)
  GET  /v1/problems/{kind}                                what an error kind means (errors are RFC 9457)
  GET  /console                                           the operator console (a browser page)
  GET  /healthz, /readyz, /metrics                        probes: no token needed unless --protect-probes

Tokens: read (GET routes, the log; ?access_token= for a browser's EventSource),
write (commands), admin (/v1/admin/*, deploying, rolling back, rebuilding). A --tokens file:
  [[token]]
  name = \"ci\"
  secret_env = \"ESHOST_CI_SECRET\"    # or secret = \"...\"
  scopes = [\"read\", \"write\"]

What a server serves is recorded in the store: at every start, on any host,
the last version of each aggregate that passed the upgrade check. The modules
directory seeds it and is watched: a component the store has never seen goes
live once it replays a sample of the recorded streams (--upgrade-check), or is
refused for good; a changed one replaces its version (commands already decided
finish on the old one); a removed file changes nothing; a file that fails to
load is reported (log, /readyz, the reload answer) while the running version
keeps serving. Each server follows the store's live set within a second, so a
version deployed through one (eshost deploy, PUT /v1/modules/{name}) reaches
all. Write files with a rename (cp x.wasm dir/.x.tmp && mv ...) so a
half-written file is never seen.";

/// Serve the HTTP API until SIGTERM or SIGINT, then drain: every accepted
/// command is answered and committed before the process exits.
#[derive(Debug, Args)]
#[command(after_help = HELP)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: put a reverse proxy in
    /// front to serve other machines.
    #[arg(long, env = "ESHOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A token with every scope (named `default`): when any token is set,
    /// every request but the probes needs `Authorization: Bearer TOKEN`.
    #[arg(long, env = "ESHOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Named tokens with scopes (read, write, admin), from a TOML file of
    /// `[[token]]` tables: name, secret or secret_env, scopes.
    #[arg(long, env = "ESHOST_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,

    /// With tokens, `/healthz`, `/readyz` and `/metrics` need the read
    /// scope too (by default probes need no token).
    #[arg(long, env = "ESHOST_PROTECT_PROBES")]
    pub protect_probes: bool,

    /// Serve with no token on an address other machines can reach (only
    /// behind something that authenticates for it).
    #[arg(long, env = "ESHOST_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Serve HTTPS with this certificate chain (PEM: the server's
    /// certificate first, then any intermediates). Needs --tls-key.
    #[arg(
        long,
        env = "ESHOST_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "ESHOST_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// How long a command may take, in milliseconds, before its caller is
    /// answered 504 (outcome unknown: resend with the same Idempotency-Key).
    #[arg(long, env = "ESHOST_COMMAND_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub command_timeout_ms: u64,

    /// How long a read (a GET but the event log's stream) may take, in
    /// milliseconds, before its caller is answered 504.
    #[arg(long, env = "ESHOST_READ_TIMEOUT_MS", default_value_t = server::DEFAULT_READ_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout_ms: u64,

    /// From SIGTERM or SIGINT to exit, in seconds: accepted requests finish
    /// and queues drain within this.
    #[arg(long, env = "ESHOST_SHUTDOWN_TIMEOUT_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_s: u64,

    /// Conflict retries per command before it fails (409 conflict).
    #[arg(long, env = "ESHOST_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,

    /// A token with every scope (named `admin`); when set, --token has
    /// read and write only, so `/v1/admin/*` (reload) needs this one.
    #[arg(long, env = "ESHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Do not watch the modules directory; reload only on
    /// `POST /v1/admin/reload`.
    #[arg(long, env = "ESHOST_NO_WATCH")]
    pub no_watch: bool,

    /// Followers of `GET /v1/events` served at once; more are answered 429.
    #[arg(long, env = "ESHOST_MAX_FOLLOWERS", default_value_t = server::DEFAULT_MAX_FOLLOWERS)]
    pub max_followers: usize,

    /// Connections open at once (fewer if the open-file limit would run
    /// out first). Past it, the oldest connection not being answered is
    /// closed to make room; if every one is being answered, the new one
    /// gets 503.
    #[arg(long, env = "ESHOST_MAX_CONNECTIONS", default_value_t = connections::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Connections the kernel may hold completed for the server to accept
    /// (the listen backlog; Linux cuts it to net.core.somaxconn). A load
    /// balancer opens one per waiting client at once: past this queue its
    /// handshakes are dropped and each waits a second to be retried.
    #[arg(long, env = "ESHOST_LISTEN_BACKLOG", default_value_t = connections::DEFAULT_LISTEN_BACKLOG, value_parser = clap::value_parser!(u32).range(1..))]
    pub listen_backlog: u32,

    /// How long a request's headers may take to arrive, in milliseconds,
    /// counted from when the server is ready for them; so also how long
    /// an idle kept-alive connection stays open.
    #[arg(long, env = "ESHOST_HEADER_TIMEOUT_MS", default_value_t = connections::DEFAULT_HEADER_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// How long a request's body may take to arrive after its headers, in
    /// milliseconds; past it the answer is 408.
    #[arg(long, env = "ESHOST_BODY_TIMEOUT_MS", default_value_t = connections::DEFAULT_BODY_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,

    /// Before a reload switches in a new or changed component, replay
    /// recorded streams with it, as `eshost upgrade check` does: `all`,
    /// `sample:N` (N at random) or `off`. A component that fails is not
    /// switched in: the running version keeps serving and the failure is a
    /// load error (log, /readyz, the reload answer).
    #[arg(long, env = "ESHOST_UPGRADE_CHECK", value_name = "all|sample:N|off", default_value = "sample:100", value_parser = parse_upgrade_check)]
    pub upgrade_check: UpgradeCheckArg,

    /// Also run the projections deployed in the store, seeded from
    /// --projections, as `eshost projection run` does (the directory
    /// watched unless --no-watch). Several servers may all run them: their
    /// commits cannot collide, though only one's work counts.
    #[arg(long, env = "ESHOST_RUN_PROJECTIONS")]
    pub run_projections: bool,

    /// Also run the reactors in --reactors, as `eshost reactor run` does
    /// (the directory watched unless --no-watch), their commands sent
    /// through this server's host and their deliveries to --sinks. Several
    /// servers may all run them: a lease in the store keeps one runner
    /// active per reactor.
    #[arg(long, env = "ESHOST_RUN_REACTORS")]
    pub run_reactors: bool,

    /// `/readyz` answers 503 while a projection is stopped or a
    /// transaction holds the global log's horizon. By default it lists
    /// them and stays 200, since commands still work.
    #[arg(long, env = "ESHOST_READY_REQUIRES_READ_SIDE")]
    pub ready_requires_read_side: bool,
}

/// A secret as given, refused if it is set but empty or blank.
fn secret(what: &str, value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(secret) if secret.trim().is_empty() => anyhow::bail!(
            "{what} is set but empty: give it a secret, or unset it to serve without a token"
        ),
        value => Ok(value),
    }
}

/// The tokens of --token, --admin-token and --tokens together.
fn tokens(args: &ServeArgs) -> Result<Tokens> {
    // Checked first: a secret set but empty would otherwise serve with no
    // auth at all, and nothing would say so.
    let token = secret("--token (ESHOST_TOKEN)", args.token.clone())?;
    let admin_token = secret(
        "--admin-token (ESHOST_ADMIN_TOKEN)",
        args.admin_token.clone(),
    )?;
    let mut tokens = Vec::new();
    if let Some(secret) = token {
        let scopes = match admin_token {
            Some(_) => &[Scope::Read, Scope::Write][..],
            None => &Scope::ALL[..],
        };
        tokens.push(Token::new("default", &secret, scopes)?);
    }
    if let Some(secret) = admin_token {
        tokens.push(Token::new("admin", &secret, &Scope::ALL)?);
    }
    if let Some(path) = &args.tokens {
        tokens.extend(Tokens::load(path)?);
    }
    Ok(Tokens::new(tokens)?)
}

/// Refuses to serve other machines with no token unless told to, and warns
/// when told to.
fn check_exposure(listen: SocketAddr, tokens: &Tokens, allowed: bool) -> Result<()> {
    if !tokens.is_empty() || listen.ip().is_loopback() {
        return Ok(());
    }
    anyhow::ensure!(
        allowed,
        "--listen {listen} can be reached from other machines and no token is set: \
         set ESHOST_TOKEN (or --tokens FILE), or pass --allow-unauthenticated \
         if something in front authenticates"
    );
    tracing::warn!(
        %listen,
        "serving other machines with no token (--allow-unauthenticated): anyone who reaches this address can send commands and reload modules"
    );
    Ok(())
}

/// `--upgrade-check`'s value: a selection of streams, or none.
#[derive(Debug, Clone)]
pub struct UpgradeCheckArg(Option<Selection>);

impl UpgradeCheckArg {
    /// The streams to replay; `None`: no check.
    pub fn selection(self) -> Option<Selection> {
        self.0
    }
}

pub(crate) fn parse_upgrade_check(value: &str) -> Result<UpgradeCheckArg, String> {
    let selection = match value {
        "off" => None,
        "all" => Some(Selection::All),
        _ => match value.strip_prefix("sample:").map(str::parse::<u64>) {
            Some(Ok(n)) if n > 0 => Some(Selection::Sample(n)),
            _ => return Err("expected all, sample:N (N at least 1) or off".into()),
        },
    };
    Ok(UpgradeCheckArg(selection))
}

/// Serves until SIGTERM or Ctrl-C; `traces`: spans are exported, so the
/// request spans carry OpenTelemetry's HTTP attributes.
pub async fn run(global: &GlobalArgs, args: ServeArgs, traces: bool) -> Result<()> {
    let tokens = tokens(&args)?;
    check_exposure(args.listen, &tokens, args.allow_unauthenticated)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    let runtime = global.runtime();
    // The directory's components are loaded all or nothing, as by every
    // subcommand: a broken file stops the start. What is served is then
    // what the store has deployed, seeded from them (see App::reload).
    let seeds = match global.modules.is_dir() {
        true => runtime.load_dir(&global.modules)?,
        false => Modules::default(),
    };
    let store = global.store_for(Some(&seeds)).await?;
    if !store.keeps_personal_data() {
        for declaring in seeds.iter().filter(|c| !c.personal.is_empty()) {
            tracing::warn!(
                aggregate = %declaring.name,
                "the guest declares personal data, and with no master key configured it is stored as written (set ESHOST_MASTER_KEY_FILE)"
            );
        }
    }
    let host = Host::with_options(seeds, store, global.host_options(retry, false));
    let listener = connections::listen(args.listen, args.listen_backlog)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(cap) = connections::kernel_backlog_cap().filter(|&cap| cap < args.listen_backlog) {
        tracing::warn!(
            asked = args.listen_backlog,
            kept = cap,
            "the kernel cuts the listen backlog to net.core.somaxconn; raise it (sysctl) if a load balancer opens more connections at once"
        );
    }
    // Loaded before listening: a projection that does not load stops the
    // start, as an aggregate does.
    let projections = match args.run_projections {
        true => {
            let loaded = global.projection_seeds(&runtime)?;
            let supervisor = Supervisor::new(
                host.store().clone(),
                runtime.clone(),
                global.projections.clone(),
                Vec::new(),
                false,
            );
            Some((supervisor, loaded))
        }
        false => None,
    };
    // Loaded before listening too, with the sinks they deliver to.
    let reactors = match args.run_reactors {
        true => Some((global.sinks()?, global.load_reactors(&runtime, &[])?)),
        false => None,
    };
    let config = ServerConfig {
        command_timeout: Duration::from_millis(args.command_timeout_ms),
        read_timeout: Duration::from_millis(args.read_timeout_ms),
        // The body is the command payload: the payload limit, plus room for
        // whitespace around it.
        max_body_bytes: global.limits.max_payload_bytes.saturating_add(1024),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_s),
        tokens,
        protect_probes: args.protect_probes,
        watch: !args.no_watch,
        max_followers: args.max_followers,
        upgrade_check: args.upgrade_check.0,
        connections: ConnectionLimits {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            body_timeout: Duration::from_millis(args.body_timeout_ms),
        },
        tls,
        ready_requires_read_side: args.ready_requires_read_side,
        traces,
        ..ServerConfig::default()
    };
    let watch = config.watch;
    let shutdown_timeout = config.shutdown_timeout;
    let seed_dir = global.modules.is_dir().then(|| global.modules.clone());
    let mut app = App::new(host, config).with_reloader(runtime.clone(), seed_dir);
    if let Some((supervisor, _)) = &projections {
        app = app.with_projections(supervisor.running());
    }
    if let Some((_, loaded)) = &reactors {
        app = app.with_reactor_reads(
            loaded
                .iter()
                .map(|r| {
                    let aggregates = r.subscriptions.iter().map(|s| s.aggregate.clone());
                    (r.name.clone(), aggregates.collect())
                })
                .collect(),
        );
    }
    let started = app.reload().await;
    if app.host.modules().is_empty() {
        // Nothing deployed and nothing to seed with: say why, as every
        // subcommand does for a directory without components.
        global.modules_with(&global.runtime())?;
        anyhow::bail!(
            "nothing to serve: no component in {} passed the upgrade check and none is deployed ({})",
            global.modules.display(),
            started.errors.join("; ")
        );
    }
    let stop_projecting = CancellationToken::new();
    let projecting = projections.map(|(supervisor, loaded)| {
        tokio::spawn(supervisor.run(loaded, watch, stop_projecting.clone()))
    });
    let reacting = reactors.map(|(sinks, loaded)| {
        let supervisor = eshost_react::Supervisor::new(
            app.host.clone(),
            runtime.clone(),
            global.reactors.clone(),
            Vec::new(),
            sinks,
            super::reactor::holder(),
        );
        tokio::spawn(supervisor.run(loaded, watch, stop_projecting.clone()))
    });
    // One line on stdout once listening, so scripts (and tests) can wait for it.
    println!("eshost listening on {scheme}://{}", listener.local_addr()?);
    let signalled = stop_projecting.clone();
    let shutdown = async move {
        server::termination_signal().await;
        // Projectors and reactors stop after their current page, while
        // requests finish.
        signalled.cancel();
    };
    let served = server::serve(listener, app, shutdown).await;
    stop_projecting.cancel();
    if let Some(projecting) = projecting
        && tokio::time::timeout(shutdown_timeout, projecting)
            .await
            .is_err()
    {
        tracing::warn!(
            "projections still running at the shutdown deadline; their current pages are not committed"
        );
    }
    if let Some(reacting) = reacting
        && tokio::time::timeout(shutdown_timeout, reacting)
            .await
            .is_err()
    {
        tracing::warn!(
            "reactors still running at the shutdown deadline; what they performed is recorded, what they had not is performed by the next runner"
        );
    }
    served?;
    Ok(())
}
