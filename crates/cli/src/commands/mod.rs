//! The subcommands, one file each: its options (what `--help` shows first)
//! and what it does. [`run`] hands the parsed command line to the one
//! named.

mod aggregates;
mod bench;
mod build;
mod completions;
mod demo;
mod deploy;
mod events;
mod exec;
mod migrate;
mod new;
mod personal;
mod projection;
mod projections;
mod reactor;
mod reactors;
mod reference;
mod relay;
mod serve;
mod state;
mod test;
mod upgrade;
mod view;

pub use projection::ProjectionsFailed;

use crate::args::Cli;
use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    Aggregates(aggregates::AggregatesArgs),
    Exec(exec::ExecArgs),
    State(state::StateArgs),
    Events(events::EventsArgs),
    Serve(serve::ServeArgs),
    Deploy(deploy::DeployArgs),
    Rollback(deploy::RollbackArgs),
    Deployments(deploy::DeploymentsArgs),
    New(new::NewArgs),
    Build(build::BuildArgs),
    Test(test::TestArgs),
    /// Check a new version of an aggregate against the recorded streams
    /// before it goes live (`eshost upgrade check --help`).
    #[command(subcommand)]
    Upgrade(upgrade::UpgradeCommand),
    Migrate(migrate::MigrateArgs),
    /// Run or rebuild projections: guests that build read models (views)
    /// from the global log (`eshost projection run --help`).
    #[command(subcommand)]
    Projection(projection::ProjectionCommand),
    Projections(projections::ProjectionsArgs),
    /// Run reactors: guests that react to events with commands, timers and
    /// deliveries, each performed once (`eshost reactor run --help`).
    #[command(subcommand)]
    Reactor(reactor::ReactorCommand),
    Reactors(reactors::ReactorsArgs),
    View(view::ViewArgs),
    Relay(relay::RelayArgs),
    /// The master key of personal data: make one, rotate to a new one
    /// (`eshost personal new-key --help`).
    #[command(subcommand)]
    Personal(personal::PersonalCommand),
    Forget(personal::ForgetArgs),
    /// Run a demo scenario.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
    Bench(bench::BenchArgs),
    Completions(completions::CompletionsArgs),
    #[command(hide = true)]
    Reference(reference::ReferenceArgs),
}

/// Runs the parsed command line; `traces`: spans are exported (see
/// [`crate::telemetry`]).
pub async fn run(cli: Cli, traces: bool) -> Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Aggregates(args) => aggregates::run(global, args).await,
        Command::Exec(args) => exec::run(global, args).await,
        Command::State(args) => state::run(global, args).await,
        Command::Events(args) => events::run(global, args).await,
        Command::Serve(args) => serve::run(global, args, traces).await,
        Command::Deploy(args) => deploy::deploy(global, args).await,
        Command::Rollback(args) => deploy::rollback(global, args).await,
        Command::Deployments(args) => deploy::deployments(global, args).await,
        Command::New(args) => new::run(args),
        Command::Build(args) => build::run(args),
        Command::Test(args) => test::run(global, args),
        Command::Upgrade(command) => upgrade::run(global, command).await,
        Command::Migrate(args) => migrate::run(global, args).await,
        Command::Projection(command) => projection::run(global, command).await,
        Command::Projections(args) => projections::run(global, args).await,
        Command::Reactor(command) => reactor::run(global, command).await,
        Command::Reactors(args) => reactors::run(global, args).await,
        Command::View(args) => view::run(global, args).await,
        Command::Relay(args) => relay::run(global, args).await,
        Command::Personal(command) => personal::run(global, command).await,
        Command::Forget(args) => personal::forget(global, args).await,
        Command::Demo(command) => demo::run(global, command).await,
        Command::Bench(args) => bench::run(global, args).await,
        Command::Completions(args) => completions::run(args),
        Command::Reference(args) => reference::run(args),
    }
}
