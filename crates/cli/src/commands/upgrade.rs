//! `eshost upgrade check`: load the new version, check it against the
//! recorded streams (a progress bar with an ETA on a terminal), print the
//! report, exit 1 if it fails.

use crate::args::GlobalArgs;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use eshost::upgrade::{Report, Selection, UpgradeCheck};

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Check a new version of an aggregate's component against the streams
    /// already recorded, before it goes live. First, every event name
    /// recorded for the aggregate must be one the new version declares.
    /// Then the streams are replayed from their events with the loaded
    /// version (from --modules) and the new one side by side: a stream the
    /// new version cannot replay fails the check, naming the stream and the
    /// event; a stream whose state differs is shown as a JSON Patch from the
    /// current state to the new one, for you to judge. Exits 0 if the check
    /// passes (changed states included), 1 if it fails.
    #[command(after_help = "Examples:\n  \
        eshost upgrade check new/flash-sale.wasm\n  \
        eshost upgrade check new/flash-sale.wasm --sample 1000 --json\n  \
        eshost upgrade check new/flash-sale.wasm --stream s1\n\n\
        Keep the new file outside the modules directory until it passes.")]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["all", "sample", "stream"])))]
pub struct CheckArgs {
    /// The new version's component (.wasm).
    pub component: PathBuf,
    /// Check every stream of the aggregate (the default).
    #[arg(long)]
    pub all: bool,
    /// Check N streams chosen at random.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Check one stream.
    #[arg(long, value_name = "ID")]
    pub stream: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(global: &GlobalArgs, command: UpgradeCommand) -> Result<()> {
    let UpgradeCommand::Check(args) = command;
    let runtime = global.runtime();
    let candidate = Arc::new(runtime.load(&args.component)?);
    // The aggregate may not be loaded yet: then there is nothing to compare
    // with, and the check is that the new version replays every stream.
    let current = runtime
        .load_dir(&global.modules)
        .with_context(|| {
            format!(
                "loading the current versions from {}",
                global.modules.display()
            )
        })?
        .get(&candidate.name)
        .cloned();
    let store = global.store().await?;
    let selection = match (args.sample, args.stream) {
        (Some(n), _) => Selection::Sample(n),
        (_, Some(id)) => Selection::Stream(id),
        _ => Selection::All,
    };
    let check = UpgradeCheck::new(store, current, candidate).await?;
    let total = check.count(&selection).await?;
    // Drawn only when stderr is a terminal.
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} streams, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = check.run(&selection, |done| bar.set_position(done)).await;
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report, &args.component));
    }
    if !report.passed {
        bail!("upgrade check failed: {}", report.failure());
    }
    Ok(())
}

/// The report for a person.
fn render(report: &Report, component: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let current = match &report.current_version {
        Some(version) => format!("{version} (loaded)"),
        None => "not loaded".to_string(),
    };
    let _ = writeln!(
        out,
        "{}: {current} -> {} ({}, sha256 {})",
        report.aggregate,
        report.candidate_version,
        component.display(),
        &report.candidate_digest[..12.min(report.candidate_digest.len())]
    );
    if !report.undeclared_events.is_empty() {
        let _ = writeln!(
            out,
            "recorded events {} does not declare: {}",
            report.candidate_version,
            report.undeclared_events.join(", ")
        );
    }
    let _ = writeln!(out, "{} streams replayed", report.streams_checked);
    for failed in &report.failed {
        let _ = writeln!(out, "FAILED  {}: {}", failed.id, failed.error);
    }
    more(&mut out, report.failed_count, report.failed.len(), "failed");
    for changed in &report.changed {
        let _ = writeln!(
            out,
            "changed {} at version {}:",
            changed.id, changed.version
        );
        for operation in &changed.patch {
            let _ = writeln!(out, "    {}", describe(operation, &changed.current_state));
        }
        if changed.operation_count > changed.patch.len() {
            let _ = writeln!(
                out,
                "    ... and {} more changes",
                changed.operation_count - changed.patch.len()
            );
        }
    }
    more(
        &mut out,
        report.changed_count,
        report.changed.len(),
        "changed",
    );
    for failing in &report.already_failing {
        let _ = writeln!(
            out,
            "already failing with the loaded version: {}: {}",
            failing.id, failing.error
        );
    }
    let verdict = if report.passed { "passed" } else { "FAILED" };
    let _ = writeln!(
        out,
        "{verdict}: {} cannot be loaded, {} changed, {} unchanged",
        report.failed_count,
        report.changed_count,
        report
            .streams_checked
            .saturating_sub(report.failed_count + report.changed_count)
    );
    out
}

fn more(out: &mut String, count: u64, listed: usize, what: &str) {
    use std::fmt::Write;
    if count > listed as u64 {
        let _ = writeln!(out, "... and {} more {what} streams", count - listed as u64);
    }
}

/// One JSON Patch operation as `replace /stock: 7 -> 8`.
fn describe(operation: &serde_json::Value, before: &serde_json::Value) -> String {
    let op = operation["op"].as_str().unwrap_or("?");
    let path = operation["path"].as_str().unwrap_or("");
    let old = || short(before.pointer(path).unwrap_or(&serde_json::Value::Null));
    match op {
        "replace" => format!(
            "replace {path}: {} -> {}",
            old(),
            short(&operation["value"])
        ),
        "remove" => format!("remove {path} (was {})", old()),
        _ => format!("{op} {path}: {}", short(&operation["value"])),
    }
}

/// A value as compact JSON, cut to 80 characters.
fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
