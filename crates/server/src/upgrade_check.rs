//! The upgrade check as the server runs it before a version goes live
//! (a reload seeding from the directory, a deploy, a rollback): against
//! the version serving, within [`CHECK_DEADLINE`], with a verdict that
//! tells a refusal from a check that could not run; and how a component
//! is named in what it says.

use crate::App;
use eshost::upgrade::{Report, Selection, UpgradeCheck};
use eshost_wasm::LoadedComponent;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The longest an upgrade check may take before a version goes live.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(60);

/// What an upgrade check said.
pub(crate) enum Verdict {
    Passed(Report),
    /// The report, and why in one line.
    Failed(Report, String),
    /// Not a verdict on the component (the store failed, the deadline
    /// passed): it may be checked again.
    CouldNotRun(String),
}

/// Runs the upgrade check of `candidate` against `baseline` (none: a new
/// aggregate, checked against whatever its name has recorded), within
/// [`CHECK_DEADLINE`].
pub(crate) async fn check(
    app: &App,
    baseline: Option<Arc<LoadedComponent>>,
    candidate: &Arc<LoadedComponent>,
    selection: &Selection,
) -> Verdict {
    let started = std::time::Instant::now();
    let run = async {
        let check =
            UpgradeCheck::new(app.host.store().clone(), baseline, candidate.clone()).await?;
        check.run(selection, |_| {}).await
    };
    let checked = match tokio::time::timeout(CHECK_DEADLINE, run).await {
        Ok(Ok(checked)) => checked,
        Ok(Err(e)) => return Verdict::CouldNotRun(e.to_string()),
        Err(_) => {
            return Verdict::CouldNotRun(format!(
                "it did not finish within {} s; check fewer streams (--upgrade-check sample:N)",
                CHECK_DEADLINE.as_secs()
            ));
        }
    };
    if checked.passed {
        info!(aggregate = %candidate.name, version = %candidate.version,
            streams = checked.streams_checked, changed = checked.changed_count,
            took_ms = started.elapsed().as_millis() as u64,
            "upgrade check passed");
        return Verdict::Passed(checked);
    }
    let reason = format!("upgrade check failed: {}", checked.failure());
    Verdict::Failed(checked, reason)
}

/// `sha256:` and the first 12 hex digits of a digest label.
pub(crate) fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256 {}…", hex.get(..12).unwrap_or(hex))
}

/// A component by name, version and the start of its digest: two builds of
/// one version are told apart.
pub(crate) fn described(component: &LoadedComponent) -> String {
    format!(
        "{} {} ({})",
        component.name,
        component.version,
        short(&component.digest)
    )
}
