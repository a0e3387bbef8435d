//! `eshost deploy`, `eshost rollback` and `eshost deployments`: putting a
//! new version of an aggregate (after the upgrade check) or of a projection
//! live, on a server (`--server`) or straight into the store. Either way the
//! deployment is recorded in the store, and every server on it serves (or
//! runs) it within about a second.

use crate::args::{GlobalArgs, RemoteArgs};
use crate::backend::Backend;
use crate::commands::serve::{UpgradeCheckArg, parse_upgrade_check};
use anyhow::{Context, Result};
use clap::Args;
use eshost::dispatch::{Host, RetryPolicy};
use eshost_api::{DeployAnswer, Deployment};
use eshost_client::ClientError;
use eshost_core::ComponentKind;
use eshost_read::deployed;
use eshost_server::error::ApiError;
use eshost_server::projections::{deploy_answer, deploy_error};
use eshost_server::reactors::deploy_answer as reactor_answer;
use eshost_server::{App, ServerConfig};
use eshost_wasm::{LoadedProjection, LoadedReactor, Modules};
use std::path::PathBuf;

/// Deploy a component: an aggregate's, a projection's or a reactor's. For
/// an aggregate the upgrade check runs against the recorded streams, and if
/// it passes the new version goes live on every server on the store; a
/// projection runs wherever projections run on the store, a reactor
/// wherever reactors run.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  eshost deploy target/modules/flash-sale.wasm --server http://127.0.0.1:8080
  ESHOST_TOKEN=<admin token> eshost deploy flash-sale.wasm --server https://eshost.example
  eshost deploy flash-sale.wasm --database-url postgres://postgres@127.0.0.1/postgres
  eshost deploy target/projections/sales-summary.wasm
  eshost deploy target/reactors/checkout.wasm --server http://127.0.0.1:8080

Without --server it records the deployment in the store itself, checking
as --upgrade-check says; servers on that store follow within a second.
A refused version is never deployed, nor checked again (exit 1).")]
pub struct DeployArgs {
    /// The component file (.wasm); what it implements (an aggregate, a
    /// projection or a reactor, and its name) is read from it.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    #[command(flatten)]
    to: Target,
}

/// Where a deployment is made, and how it is told: what `deploy` and
/// `rollback` share.
#[derive(Debug, Args)]
struct Target {
    /// Without --server: which recorded streams the upgrade check replays.
    #[arg(long, value_name = "all|sample:N|off", default_value = "sample:100", value_parser = parse_upgrade_check)]
    upgrade_check: UpgradeCheckArg,

    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

/// Bring back the version of an aggregate that was live before the
/// current one, after the upgrade check (or of a projection, with
/// --projection, or a reactor, with --reactor).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  eshost rollback FlashSaleItem --server http://127.0.0.1:8080
  eshost rollback FlashSaleItem
  eshost rollback --projection sales-summary
  eshost rollback --reactor checkout")]
pub struct RollbackArgs {
    /// The aggregate (or projection, or reactor).
    #[arg(value_name = "NAME")]
    aggregate: String,

    /// NAME is a projection's.
    #[arg(long, conflicts_with = "reactor")]
    projection: bool,

    /// NAME is a reactor's.
    #[arg(long)]
    reactor: bool,

    #[command(flatten)]
    to: Target,
}

/// List the deployments of an aggregate (or projection, or reactor), newest first:
/// version, digest, what happened, by which token, when.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  eshost deployments FlashSaleItem
  eshost deployments FlashSaleItem --server http://127.0.0.1:8080 --json
  eshost deployments --projection sales-summary
  eshost deployments --reactor checkout")]
pub struct DeploymentsArgs {
    /// The aggregate (or projection, or reactor).
    #[arg(value_name = "NAME")]
    aggregate: String,

    /// NAME is a projection's.
    #[arg(long, conflicts_with = "reactor")]
    projection: bool,

    /// NAME is a reactor's.
    #[arg(long)]
    reactor: bool,

    /// Print one JSON array.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

pub async fn deploy(global: &GlobalArgs, args: DeployArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // What it implements, from its manifest: loaded here, in the sandbox,
    // as the server will.
    let runtime = global.runtime();
    let (kind, name) = match runtime.load(&args.file) {
        Ok(component) => (ComponentKind::Aggregate, component.name.clone()),
        Err(as_aggregate) => match runtime.load_projection(&args.file) {
            Ok(projection) => (ComponentKind::Projection, projection.name.clone()),
            Err(_) => match runtime.load_reactor(&args.file) {
                Ok(reactor) => (ComponentKind::Reactor, reactor.name.clone()),
                Err(_) => return Err(as_aggregate.into()),
            },
        },
    };
    let answer = match Backend::choose(global, &args.to.remote)? {
        Backend::Remote(client) => client.deploy(kind, &name, bytes).await?,
        Backend::Local(global) if kind == ComponentKind::Projection => {
            let store = global.store().await?;
            let deployed =
                deployed::deploy::<LoadedProjection>(&*store, &runtime, &name, bytes, None)
                    .await
                    .map_err(|e| client_error(deploy_error(e)))?;
            deploy_answer(deployed)
        }
        Backend::Local(global) if kind == ComponentKind::Reactor => {
            let store = global.store().await?;
            let deployed = deployed::deploy::<LoadedReactor>(&*store, &runtime, &name, bytes, None)
                .await
                .map_err(|e| client_error(deploy_error(e)))?;
            reactor_answer(deployed)
        }
        Backend::Local(global) => {
            let app = local_app(global, args.to.upgrade_check).await?;
            let deployer = app.reloader.clone().context("no deployer")?;
            deployer
                .deploy(&app, &name, bytes, None)
                .await
                .map_err(client_error)?
        }
    };
    print_answer(&answer, args.to.json)
}

pub async fn rollback(global: &GlobalArgs, args: RollbackArgs) -> Result<()> {
    let kind = kind_of(args.projection, args.reactor);
    let answer = match Backend::choose(global, &args.to.remote)? {
        Backend::Remote(client) => client.rollback(kind, &args.aggregate).await?,
        Backend::Local(global) if args.reactor => {
            let store = global.store().await?;
            let deployed = deployed::rollback::<LoadedReactor>(
                &*store,
                &global.runtime(),
                &args.aggregate,
                None,
            )
            .await
            .map_err(|e| client_error(deploy_error(e)))?;
            reactor_answer(deployed)
        }
        Backend::Local(global) if args.projection => {
            let store = global.store().await?;
            let deployed = deployed::rollback::<LoadedProjection>(
                &*store,
                &global.runtime(),
                &args.aggregate,
                None,
            )
            .await
            .map_err(|e| client_error(deploy_error(e)))?;
            deploy_answer(deployed)
        }
        Backend::Local(global) => {
            let app = local_app(global, args.to.upgrade_check).await?;
            let deployer = app.reloader.clone().context("no deployer")?;
            deployer
                .rollback(&app, &args.aggregate, None)
                .await
                .map_err(client_error)?
        }
    };
    print_answer(&answer, args.to.json)
}

pub async fn deployments(global: &GlobalArgs, args: DeploymentsArgs) -> Result<()> {
    let kind = kind_of(args.projection, args.reactor);
    let history: Vec<Deployment> = match Backend::choose(global, &args.remote)? {
        Backend::Remote(client) => client.deployments(kind, &args.aggregate).await?,
        Backend::Local(global) => {
            let store = global.store().await?;
            store
                .deployments()
                .deployment_history(
                    kind,
                    &args.aggregate,
                    None,
                    eshost_store::deployments::MAX_HISTORY_PAGE,
                )
                .await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&history)?);
        return Ok(());
    }
    for entry in &history {
        println!(
            "{} {:<11} {} {} ({}){}{}",
            entry.at,
            entry.action.as_str(),
            entry.name,
            entry.version,
            entry.digest,
            entry
                .by
                .as_deref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default(),
            entry
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

/// A server's deployer on the store, without listening: the live set
/// loaded, the check as `upgrade_check` says.
async fn local_app(global: &GlobalArgs, upgrade_check: UpgradeCheckArg) -> Result<App> {
    let store = global.store().await?;
    let host = Host::with_options(
        Modules::default(),
        store,
        global.host_options(RetryPolicy::default(), false),
    );
    let config = ServerConfig {
        upgrade_check: upgrade_check.selection(),
        ..ServerConfig::default()
    };
    let app = App::new(host, config).with_reloader(global.runtime(), None);
    app.reload().await;
    Ok(app)
}

fn kind_of(projection: bool, reactor: bool) -> ComponentKind {
    match (projection, reactor) {
        (true, _) => ComponentKind::Projection,
        (false, true) => ComponentKind::Reactor,
        (false, false) => ComponentKind::Aggregate,
    }
}

/// A refusal here reads, and exits, as the server's would.
fn client_error(error: ApiError) -> ClientError {
    ClientError::Api {
        status: error.status.as_u16(),
        kind: error.kind.to_string(),
        message: error.message,
        command_id: None,
    }
}

fn print_answer(answer: &DeployAnswer, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(answer)?);
        return Ok(());
    }
    let live = match (&answer.aggregate, &answer.projection, &answer.reactor) {
        (Some(a), _, _) => Some((&a.name, &a.version, &a.digest)),
        (None, Some(p), _) => Some((&p.name, &p.version, &p.digest)),
        (None, None, Some(r)) => Some((&r.name, &r.version, &r.digest)),
        (None, None, None) => None,
    };
    match (&answer.deployment, live) {
        (None, Some((name, version, digest))) => {
            println!("{name} {version} ({digest}) is live already; nothing deployed")
        }
        (Some(recorded), _) => {
            println!(
                "{} {} {} ({}), deployment {}",
                recorded.action.as_str(),
                recorded.name,
                recorded.version,
                recorded.digest,
                recorded.id
            );
            if let Some(check) = &answer.check {
                println!(
                    "  upgrade check: {} streams replayed, {} with a changed state",
                    check["streams_checked"], check["changed_count"]
                );
            }
        }
        (None, None) => println!("nothing deployed"),
    }
    Ok(())
}
