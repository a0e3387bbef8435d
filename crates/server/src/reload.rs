//! What a host serves: the aggregates deployed in the store, seeded from
//! the modules directory.
//!
//! The store records every deployment (`eshost_store::Deployments`): what
//! is live for an aggregate is its newest deployment that was not refused,
//! and its component's bytes are kept there, so every start, on any host,
//! serves the last version that passed the upgrade check, whatever files
//! sit in its directory. A reload:
//!
//! 1. reads the modules directory, loading what changed since the last
//!    look (off the async runtime);
//! 2. reads the live set from the store, and loads from the store any live
//!    component this host has not got;
//! 3. seeds: a component in the directory the store has never seen for
//!    its aggregate runs the upgrade check ([`eshost::upgrade`]) against
//!    the live version, or what this host runs, and is recorded as seeded
//!    (live from then on, on every host) or as refused. A component seen
//!    before is not checked again: a refused one stays refused, and one a
//!    later deployment superseded stays superseded;
//! 4. switches the host to the live set at once.
//!
//! A file removed from the directory changes nothing: its aggregate stays
//! deployed. Reloads run one at a time. The directory is watched (a burst
//! of file events makes one reload, see [`watch_components`]), the store's
//! live set is looked at every [`CONVERGE_INTERVAL`] (a host reloads when
//! it differs from what it serves), and `POST /v1/admin/reload` reloads on
//! demand. A load error or a refusal is logged when it first appears, not
//! again at every reload that still finds it; the versions refused are
//! shown with the aggregates (`GET /v1/aggregates`, `refused`).

use super::App;
use crate::upgrade_check::{Verdict, check, described, short};
use eshost_core::{
    ComponentKind, DeployAction, Deployment, RefusedVersion, ReloadReport, digest_label,
};
use eshost_store::NewDeployment;
use eshost_wasm::watch::watch_components;
use eshost_wasm::{LoadedComponent, Modules, Runtime};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

/// How often a host looks at the store's live set: a deployment made
/// through another host is served here within about this long.
pub const CONVERGE_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps a host serving what is deployed.
pub struct Reloader {
    pub(crate) runtime: Runtime,
    /// The modules directory that seeds the store, if the host has one.
    dir: Option<PathBuf>,
    /// One reload (or deployment) at a time; holds what the reloads so
    /// far have found.
    pub(crate) running: Mutex<Found>,
}

/// What earlier reloads found.
#[derive(Default)]
pub(crate) struct Found {
    /// Live components whose bytes from the store did not load on this
    /// host, by digest, with the error: not loaded again.
    unloadable: HashMap<String, String>,
    /// The load errors the last reload logged.
    logged: HashSet<String>,
}

/// One reload's work in progress: the live set as it is being resolved.
struct Pass<'a> {
    app: &'a App,
    /// The digest (`sha256:…`) live in the store, by aggregate.
    live: BTreeMap<String, String>,
    /// The components to serve, by aggregate.
    serving: BTreeMap<String, Arc<LoadedComponent>>,
    /// The versions refused, by aggregate, as `/v1/aggregates` shows them.
    refused: BTreeMap<String, RefusedVersion>,
    report: ReloadReport,
}

impl Reloader {
    pub fn new(runtime: Runtime, dir: Option<PathBuf>) -> Self {
        Self {
            runtime,
            dir,
            running: Mutex::default(),
        }
    }

    /// Reloads now (see the module doc): switches the host to the live set
    /// (unless nothing changed), records the load errors for `/readyz`.
    pub async fn reload(&self, app: &App) -> ReloadReport {
        let mut found = self.running.lock().await;
        self.reload_locked(app, &mut found, None).await
    }

    /// Reloads, the caller holding the lock; `uploaded` is a component
    /// just deployed, loaded already.
    pub(crate) async fn reload_locked(
        &self,
        app: &App,
        found: &mut Found,
        uploaded: Option<Arc<LoadedComponent>>,
    ) -> ReloadReport {
        let current = app.host.modules();
        let (scanned, report) = self.scan(&current).await;
        let live = match live_set(app).await {
            Ok(live) => live,
            Err(error) => return self.unchanged(app, found, report, error),
        };
        let mut pass = Pass {
            app,
            live: live
                .iter()
                .map(|d| (d.name.clone(), d.digest.clone()))
                .collect(),
            serving: BTreeMap::new(),
            refused: BTreeMap::new(),
            report,
        };
        for deployment in &live {
            let component = self
                .live_component(
                    app,
                    found,
                    [
                        uploaded.as_ref(),
                        scanned.get(&deployment.name),
                        current.get(&deployment.name),
                    ],
                    deployment,
                    &mut pass.report,
                )
                .await;
            if let Some(component) = component {
                pass.serving.insert(deployment.name.clone(), component);
            }
        }
        // What this host runs that the store has never recorded (a host
        // built with components in hand) keeps running, unless seeding
        // finds it refused.
        for component in current.iter() {
            if !pass.live.contains_key(&component.name) {
                pass.serving
                    .entry(component.name.clone())
                    .or_insert_with(|| component.clone());
            }
        }
        for candidate in scanned.iter() {
            pass.seed(&current, candidate).await;
        }
        let mut next = Modules::default();
        for component in pass.serving.into_values() {
            if let Err(e) = next.insert_shared(component) {
                pass.report.errors.push(e.to_string());
            }
        }
        let refused_names: Vec<String> = pass.refused.keys().cloned().collect();
        let mut report = pass.report;
        current.compare_except(&next, &refused_names, &mut report);
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
        self.finish(app, found, &report);
        app.set_refused(pass.refused);
        report
    }

    /// Ends a reload that changes nothing, with `error`.
    fn unchanged(
        &self,
        app: &App,
        found: &mut Found,
        mut report: ReloadReport,
        error: String,
    ) -> ReloadReport {
        report.errors.push(error);
        let current = app.host.modules();
        current.compare(&current, &mut report);
        self.finish(app, found, &report);
        report
    }

    /// Logs the errors not logged before and shows them on `/readyz`.
    fn finish(&self, app: &App, found: &mut Found, report: &ReloadReport) {
        for error in &report.errors {
            if !found.logged.contains(error) {
                warn!(%error, "reload: not loaded; the running version keeps serving");
            }
        }
        found.logged = report.errors.iter().cloned().collect();
        app.set_load_errors(report.errors.clone());
    }

    /// The modules directory's components: unchanged ones as they run,
    /// changed and new ones loaded (off the async runtime). Nothing
    /// without a directory.
    async fn scan(&self, current: &Arc<Modules>) -> (Modules, ReloadReport) {
        let Some(dir) = self.dir.clone() else {
            return (Modules::default(), ReloadReport::default());
        };
        let (runtime, current) = (self.runtime.clone(), current.clone());
        match tokio::task::spawn_blocking(move || current.reload_dir(&runtime, &dir)).await {
            Ok(scanned) => scanned,
            Err(e) => (
                Modules::default(),
                ReloadReport {
                    errors: vec![format!("reading the modules directory panicked: {e}")],
                    ..ReloadReport::default()
                },
            ),
        }
    }

    /// The component of a live deployment: one loaded already with its
    /// digest (`loaded`: one just uploaded, the directory's, the one
    /// running), else loaded from the bytes the store keeps. When those do
    /// not load, what runs now (the last of `loaded`, if any) keeps
    /// running, and the error is reported.
    async fn live_component(
        &self,
        app: &App,
        found: &mut Found,
        loaded: [Option<&Arc<LoadedComponent>>; 3],
        deployment: &Deployment,
        report: &mut ReloadReport,
    ) -> Option<Arc<LoadedComponent>> {
        let same = |c: &Arc<LoadedComponent>| {
            c.name == deployment.name && digest_label(&c.digest) == deployment.digest
        };
        if let Some(component) = loaded.into_iter().flatten().find(|c| same(c)) {
            return Some(component.clone());
        }
        let [_, _, running] = loaded;
        let fallback = running.cloned();
        let deployed = format!(
            "{} {} ({}), deployed",
            deployment.name,
            deployment.version,
            short(&deployment.digest)
        );
        if let Some(error) = found.unloadable.get(&deployment.digest) {
            report.errors.push(error.clone());
            return fallback;
        }
        match self.load_deployed(app, deployment).await {
            Ok(component) => Some(Arc::new(component)),
            Err((error, again)) => {
                let error = format!("{deployed}, does not load on this host: {error}");
                if again {
                    found
                        .unloadable
                        .insert(deployment.digest.clone(), error.clone());
                }
                report.errors.push(error);
                fallback
            }
        }
    }

    /// Loads a deployed component from the bytes the store keeps. Fails
    /// with the reason, and whether it would fail again (then it is not
    /// tried again): a store that did not answer may answer next time.
    async fn load_deployed(
        &self,
        app: &App,
        deployment: &Deployment,
    ) -> Result<LoadedComponent, (String, bool)> {
        let read = app
            .host
            .store()
            .deployments()
            .component_bytes(&deployment.digest);
        let bytes = match tokio::time::timeout(app.config.read_timeout, read).await {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return Err(("the store keeps no bytes for it".into(), true)),
            Ok(Err(e)) => return Err((format!("cannot read it from the store: {e}"), false)),
            Err(_) => {
                return Err((
                    "cannot read it from the store: no answer in time".into(),
                    false,
                ));
            }
        };
        let (runtime, origin) = (
            self.runtime.clone(),
            eshost_store::deployments::origin(deployment),
        );
        match tokio::task::spawn_blocking(move || runtime.load_bytes(bytes, &origin)).await {
            Ok(Ok(component)) => Ok(component),
            Ok(Err(e)) => Err((e.to_string(), true)),
            Err(e) => Err((format!("loading it panicked: {e}"), true)),
        }
    }

    /// Watches the directory (if any) and the store's live set, and
    /// reloads after changes, until the returned watcher is dropped and
    /// `stopping` is cancelled.
    pub fn watch(
        self: &Arc<Self>,
        app: App,
        watch_dir: bool,
    ) -> Option<notify::RecommendedWatcher> {
        let (reload_tx, mut reloads) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = match (&self.dir, watch_dir) {
            (Some(dir), true) => match watch_components(dir) {
                Ok((watcher, mut changes)) => {
                    let reload_tx = reload_tx.clone();
                    tokio::spawn(async move {
                        while changes.recv().await.is_some() {
                            let _ = reload_tx.try_send(());
                        }
                    });
                    info!(dir = %dir.display(), "watching the modules directory");
                    Some(watcher)
                }
                Err(e) => {
                    warn!(error = %e, "cannot watch the modules directory; POST /v1/admin/reload still reloads");
                    None
                }
            },
            _ => None,
        };
        let converge = app.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CONVERGE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = converge.stopping.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if differs(&converge).await {
                    let _ = reload_tx.try_send(());
                }
            }
        });
        let reloader = self.clone();
        tokio::spawn(async move {
            while reloads.recv().await.is_some() {
                reloader.reload(&app).await;
            }
        });
        watcher
    }
}

/// The store's live set of aggregates, within the read deadline; or why
/// it could not be read.
async fn live_set(app: &App) -> Result<Vec<Deployment>, String> {
    let read = app
        .host
        .store()
        .deployments()
        .live_deployments(ComponentKind::Aggregate);
    match tokio::time::timeout(app.config.read_timeout, read).await {
        Ok(Ok(live)) => Ok(live),
        Ok(Err(e)) => Err(format!("cannot read the deployments: {e}")),
        Err(_) => Err("cannot read the deployments: the store did not answer in time".into()),
    }
}

/// Whether the store's live set differs from what the host serves (a
/// store that does not answer in time: no).
async fn differs(app: &App) -> bool {
    let Ok(live) = live_set(app).await else {
        return false;
    };
    let serving = app.host.modules();
    live.len() != serving.len()
        || live.iter().any(|deployment| {
            serving
                .get(&deployment.name)
                .is_none_or(|c| digest_label(&c.digest) != deployment.digest)
        })
}

impl Pass<'_> {
    /// Seeds the store with a directory component it has never seen for
    /// its aggregate (see the module doc); a refused one is shown again.
    async fn seed(&mut self, current: &Modules, candidate: &Arc<LoadedComponent>) {
        let digest = digest_label(&candidate.digest);
        if self.live.get(&candidate.name) == Some(&digest) {
            return;
        }
        let store = self.app.host.store().clone();
        let seen = store
            .deployments()
            .deployment_of(ComponentKind::Aggregate, &candidate.name, &digest)
            .await;
        match seen {
            Ok(Some(seen)) if seen.action == DeployAction::Refused => {
                let reason = seen.reason.unwrap_or_default();
                self.refuse(candidate, reason);
                return;
            }
            Ok(Some(seen)) => {
                debug!(aggregate = %candidate.name, version = %candidate.version, superseded_by = seen.id,
                    "reload: the directory's version was deployed before and superseded since; not seeded again");
                return;
            }
            Ok(None) => {}
            Err(e) => {
                self.report.errors.push(format!(
                    "{}: {} not seeded: cannot read the deployments: {e}",
                    candidate.path.display(),
                    described(candidate)
                ));
                return;
            }
        }
        // The baseline: the live version, else what this host runs. The
        // same component needs no check.
        let baseline = self
            .serving
            .get(&candidate.name)
            .or_else(|| current.get(&candidate.name))
            .cloned();
        let unchanged = baseline
            .as_ref()
            .is_some_and(|b| b.digest == candidate.digest);
        if let Some(selection) = self
            .app
            .config
            .upgrade_check
            .as_ref()
            .filter(|_| !unchanged)
        {
            match check(self.app, baseline, candidate, selection).await {
                Verdict::Passed(_) => {}
                Verdict::Failed(_, reason) => {
                    let refusal = NewDeployment {
                        kind: ComponentKind::Aggregate,
                        name: candidate.name.clone(),
                        version: candidate.version.clone(),
                        digest,
                        action: DeployAction::Refused,
                        reason: Some(reason.clone()),
                        by: None,
                    };
                    if let Err(e) = store.deployments().record_deployment(&refusal, None).await {
                        warn!(aggregate = %candidate.name, error = %e, "could not record a refusal; it is checked again at the next reload");
                    }
                    self.refuse(candidate, reason);
                    return;
                }
                Verdict::CouldNotRun(e) => {
                    // Not a verdict on the component: checked again next time.
                    self.report.errors.push(format!(
                        "{}: {} not switched in: the upgrade check could not run: {e}",
                        candidate.path.display(),
                        described(candidate),
                    ));
                    return;
                }
            }
        }
        let bytes = match tokio::fs::read(&candidate.path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                self.report.errors.push(format!(
                    "{}: {} not seeded: {e}",
                    candidate.path.display(),
                    described(candidate)
                ));
                return;
            }
        };
        // The file may have changed since it was loaded: only its bytes
        // as loaded are deployed.
        if !digest_matches(&bytes, &candidate.digest) {
            self.report.errors.push(format!(
                "{}: changed while it was being seeded; read again at the next reload",
                candidate.path.display()
            ));
            return;
        }
        let seeded = NewDeployment {
            kind: ComponentKind::Aggregate,
            name: candidate.name.clone(),
            version: candidate.version.clone(),
            digest,
            action: DeployAction::Seeded,
            reason: None,
            by: None,
        };
        match store
            .deployments()
            .record_deployment(&seeded, Some(&bytes))
            .await
        {
            Ok(recorded) => {
                info!(aggregate = %candidate.name, version = %candidate.version, id = recorded.id,
                    file = %candidate.path.display(), "reload: deployed from the modules directory");
                self.serving
                    .insert(candidate.name.clone(), candidate.clone());
            }
            Err(e) => self.report.errors.push(format!(
                "{}: {} not seeded: cannot record it: {e}",
                candidate.path.display(),
                described(candidate)
            )),
        }
    }

    /// Shows a refused component: an error line, and `refused` beside its
    /// aggregate. It is not served, even where this host loaded it.
    fn refuse(&mut self, candidate: &LoadedComponent, reason: String) {
        if self
            .serving
            .get(&candidate.name)
            .is_some_and(|c| c.digest == candidate.digest)
        {
            self.serving.remove(&candidate.name);
        }
        self.report.errors.push(format!(
            "{}: {} not switched in: {reason}",
            candidate.path.display(),
            described(candidate),
        ));
        self.refused.insert(
            candidate.name.clone(),
            RefusedVersion {
                version: candidate.version.clone(),
                digest: digest_label(&candidate.digest),
                reason,
            },
        );
    }
}

fn digest_matches(bytes: &[u8], hex_digest: &str) -> bool {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes)) == hex_digest
}
