//! Hot reload: the modules directory is watched (the `notify` crate) and
//! `POST /v1/admin/reload` reloads on demand. A reload compiles what changed
//! off the async runtime, then switches the host to the new set at once
//! (see [`Modules::reload_dir`] for what is kept, replaced and refused).
//! Reloads run one at a time; a burst of file events makes one reload
//! (see [`watch_components`]). Unless configured off,
//! a new or changed component is switched in only once it passes the
//! upgrade check ([`eshost::upgrade`]) against the recorded streams.
//!
//! A component the check refused is refused again, without another check,
//! while its file has the same digest; and a load error is logged when it
//! first appears, not again at every reload that still finds it. The
//! versions the last reload refused are shown with the aggregates
//! (`GET /v1/aggregates`, `refused`).

use super::App;
use eshost::upgrade::{Selection, UpgradeCheck};
use eshost_core::{RefusedVersion, ReloadReport};
use eshost_wasm::watch::watch_components;
use eshost_wasm::{Modules, Runtime};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Reloads a host's modules from its directory.
pub struct Reloader {
    runtime: Runtime,
    dir: PathBuf,
    /// One reload at a time; holds what the reloads so far have found.
    running: Mutex<Found>,
}

/// What earlier reloads found.
#[derive(Default)]
struct Found {
    /// Each component refused by the upgrade check (its load error and
    /// what `/v1/aggregates` shows), by name and digest.
    refusals: HashMap<(String, String), (String, RefusedVersion)>,
    /// The load errors the last reload logged.
    logged: HashSet<String>,
}

impl Reloader {
    pub fn new(runtime: Runtime, dir: PathBuf) -> Self {
        Self {
            runtime,
            dir,
            running: Mutex::default(),
        }
    }

    /// Reloads now: loads what changed, switches the host to the new set
    /// (unless nothing changed), records the load errors for `/readyz`.
    pub async fn reload(&self, app: &App) -> ReloadReport {
        let mut found = self.running.lock().await;
        let current = app.host.modules();
        let current_modules = current.clone();
        let (runtime, dir) = (self.runtime.clone(), self.dir.clone());
        let reloaded =
            tokio::task::spawn_blocking(move || current.reload_dir(&runtime, &dir)).await;
        let (next, mut report) = match reloaded {
            Ok(done) => done,
            Err(e) => {
                let report = ReloadReport {
                    errors: vec![format!("the reload panicked: {e}")],
                    ..ReloadReport::default()
                };
                app.set_load_errors(report.errors.clone());
                app.set_refused(BTreeMap::new());
                return report;
            }
        };
        let (next, refused) = match &app.config.upgrade_check {
            Some(selection) => {
                let refusals = &mut found.refusals;
                Self::checked(
                    app,
                    &current_modules,
                    next,
                    selection,
                    refusals,
                    &mut report,
                )
                .await
            }
            None => (next, BTreeMap::new()),
        };
        if report.changed() {
            app.host.replace_modules(next);
        }
        for line in &report.added {
            info!(aggregate = %line, "reload: added");
        }
        for line in &report.replaced {
            info!(aggregate = %line, "reload: replaced");
        }
        for line in &report.removed {
            info!(aggregate = %line, "reload: removed (its queued commands finish first)");
        }
        for error in &report.errors {
            if !found.logged.contains(error) {
                warn!(%error, "reload: not loaded; the running version keeps serving");
            }
        }
        found.logged = report.errors.iter().cloned().collect();
        app.set_load_errors(report.errors.clone());
        app.set_refused(refused);
        report
    }

    /// `next` without the new or changed components that fail the upgrade
    /// check against `selection` (or whose check cannot run): for those,
    /// what runs now keeps running, and the reason is a load error. A
    /// refusal is kept in `refusals`: the same digest is not checked again.
    /// Also returns the versions the check refused, by aggregate.
    async fn checked(
        app: &App,
        current: &Modules,
        next: Modules,
        selection: &Selection,
        refusals: &mut HashMap<(String, String), (String, RefusedVersion)>,
        report: &mut ReloadReport,
    ) -> (Modules, BTreeMap<String, RefusedVersion>) {
        let mut refused = Vec::new();
        let mut shown = BTreeMap::new();
        for candidate in next.iter() {
            let running = current.get(&candidate.name);
            if running.is_some_and(|running| running.digest == candidate.digest) {
                continue;
            }
            let key = (candidate.name.clone(), candidate.digest.clone());
            if let Some((error, version)) = refusals.get(&key) {
                report.errors.push(error.clone());
                shown.insert(candidate.name.clone(), version.clone());
                refused.push(candidate.name.clone());
                continue;
            }
            let store = app.host.store().clone();
            let verdict = async {
                let check = UpgradeCheck::new(store, running.cloned(), candidate.clone()).await?;
                check.run(selection, |_| {}).await
            };
            let started = std::time::Instant::now();
            let reason = match verdict.await {
                Ok(checked) if checked.passed => {
                    info!(aggregate = %candidate.name, version = %candidate.version,
                        streams = checked.streams_checked, changed = checked.changed_count,
                        took_ms = started.elapsed().as_millis() as u64,
                        "reload: upgrade check passed");
                    continue;
                }
                Ok(checked) => format!("upgrade check failed: {}", checked.failure()),
                Err(e) => {
                    // Not a verdict on the component: checked again next time.
                    report.errors.push(format!(
                        "{}: {} not switched in: the upgrade check could not run: {e}",
                        candidate.path.display(),
                        described(candidate),
                    ));
                    refused.push(candidate.name.clone());
                    continue;
                }
            };
            let error = format!(
                "{}: {} not switched in: {reason}",
                candidate.path.display(),
                described(candidate),
            );
            let version = RefusedVersion {
                version: candidate.version.clone(),
                digest: format!("sha256:{}", candidate.digest),
                reason,
            };
            report.errors.push(error.clone());
            shown.insert(candidate.name.clone(), version.clone());
            refusals.insert(key, (error, version));
            refused.push(candidate.name.clone());
        }
        if refused.is_empty() {
            return (next, shown);
        }
        let mut checked = Modules::default();
        for component in next.iter() {
            let keep = match refused.contains(&component.name) {
                true => current.get(&component.name),
                false => Some(component),
            };
            if let Some(keep) = keep
                && let Err(e) = checked.insert_shared(keep.clone())
            {
                report.errors.push(e.to_string());
            }
        }
        current.compare_except(&checked, &refused, report);
        (checked, shown)
    }

    /// Watches the directory and reloads after changes, until the returned
    /// watcher is dropped.
    pub fn watch(self: &Arc<Self>, app: App) -> notify::Result<notify::RecommendedWatcher> {
        let (watcher, mut changes) = watch_components(&self.dir)?;
        let reloader = self.clone();
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                reloader.reload(&app).await;
            }
        });
        info!(dir = %self.dir.display(), "watching the modules directory");
        Ok(watcher)
    }
}

/// A component by name, version and the start of its digest: two builds of
/// one version are told apart.
fn described(component: &eshost_wasm::LoadedComponent) -> String {
    let digest = component.digest.get(..12).unwrap_or(&component.digest);
    format!(
        "{} {} (sha256 {digest}…)",
        component.name, component.version
    )
}
