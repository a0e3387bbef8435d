//! Which version of each projection (and each reactor) runs: the one
//! deployed in the store, as for aggregates (`eshost_store::Deployments`,
//! kind `projection` or `reactor`).
//!
//! - A deployment (`PUT /v1/projections/{name}`, `eshost deploy`) loads
//!   the component in the sandbox and records it with its bytes; every
//!   process that runs projections on the store switches to it within
//!   about a second (see [`crate::supervisor`]).
//! - A rollback brings back the version live before the current one.
//! - A projection directory seeds the store: a file whose component the
//!   store has never seen for its name is recorded as `seeded`, and runs
//!   from then on wherever projections run on that store. One seen before
//!   and superseded since is not seeded again (roll back to it instead),
//!   and a file removed changes nothing.
//!
//! There is no upgrade check: a projection writes only its own view, and a
//! version that fails an event stops there, its status saying why, until
//! another version is deployed.
//!
//! All of it is written once for any kind of component deployed this way
//! ([`Deployable`]: projections, and reactors, which `eshost_react`'s
//! supervisor runs the same way), since each kind is deployed, rolled back
//! and seeded alike.

use eshost_core::{ComponentKind, DeployAction, Deployment, digest_label};
use eshost_store::deployments::{RollbackTarget, origin, rollback_target};
use eshost_store::{EventStore, NewDeployment, StoreError};
use eshost_wasm::{LoadError, LoadedProjection, LoadedReactor, Runtime};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The most a look at the store (the live set, seeding) may take; past it,
/// what runs keeps running and the next look tries again.
pub const STORE_DEADLINE: Duration = Duration::from_secs(10);

/// A kind of component deployed through the store without an upgrade
/// check, loaded in this process's sandbox.
pub trait Deployable: Send + Sync + Sized + 'static {
    /// The kind the store records it under.
    const KIND: ComponentKind;
    /// Its name, from its manifest: one live version per name.
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    /// sha256 of the component, hex.
    fn digest(&self) -> &str;
    /// The file it was loaded from, or where its bytes came from.
    fn path(&self) -> &Path;
    /// Loads one from its bytes; `origin` names where they came from.
    fn load(runtime: &Runtime, bytes: Vec<u8>, origin: &Path) -> Result<Self, LoadError>;
}

impl Deployable for LoadedProjection {
    const KIND: ComponentKind = ComponentKind::Projection;
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn digest(&self) -> &str {
        &self.digest
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn load(runtime: &Runtime, bytes: Vec<u8>, origin: &Path) -> Result<Self, LoadError> {
        runtime.load_projection_bytes(bytes, origin)
    }
}

impl Deployable for LoadedReactor {
    const KIND: ComponentKind = ComponentKind::Reactor;
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn digest(&self) -> &str {
        &self.digest
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn load(runtime: &Runtime, bytes: Vec<u8>, origin: &Path) -> Result<Self, LoadError> {
        runtime.load_reactor_bytes(bytes, origin)
    }
}

/// Why a deployment or rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Not a component of the kind this host loads, or another one's.
    #[error("{0}")]
    InvalidComponent(String),
    /// Nothing of that name is deployed.
    #[error("{0}")]
    NotDeployed(String),
    /// A rollback with nothing to go back to.
    #[error("{0}")]
    NoEarlierVersion(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A deployment's outcome: the entry recorded (none when that version was
/// live already) and the component as it now runs.
#[derive(Debug)]
pub struct Deployed<C> {
    pub deployment: Option<Deployment>,
    pub component: Arc<C>,
}

/// Deploys `bytes` as the component `name` of kind `C`, by the token named
/// `by`.
pub async fn deploy<C: Deployable>(
    store: &dyn EventStore,
    runtime: &Runtime,
    name: &str,
    bytes: Vec<u8>,
    by: Option<String>,
) -> Result<Deployed<C>, DeployError> {
    let kind = C::KIND.as_str();
    let origin = PathBuf::from(format!("upload/{name}.wasm"));
    let component: Arc<C> = load(runtime, bytes.clone(), origin).await?;
    if component.name() != name {
        return Err(DeployError::InvalidComponent(format!(
            "the component is {kind} {}, not {name}: deploy it as PUT /v1/{kind}s/{}",
            component.name(),
            component.name()
        )));
    }
    let digest = digest_label(component.digest());
    let deployments = store.deployments();
    let live = deployments.live_deployments(C::KIND).await?;
    if live.iter().any(|d| d.name == name && d.digest == digest) {
        return Ok(Deployed {
            deployment: None,
            component,
        });
    }
    let deployed = NewDeployment {
        kind: C::KIND,
        name: name.into(),
        version: component.version().to_owned(),
        digest,
        action: DeployAction::Deployed,
        reason: None,
        by,
    };
    let recorded = deployments
        .record_deployment(&deployed, Some(&bytes))
        .await?;
    info!(kind, name, version = %component.version(), id = recorded.id,
        by = recorded.by.as_deref().unwrap_or("-"), "deployed");
    Ok(Deployed {
        deployment: Some(recorded),
        component,
    })
}

/// Brings back the version of the component `name` of kind `C` live before
/// the current one. A projection goes on from the view's checkpoint, as
/// any new version does; a rebuild recomputes the view from the start.
pub async fn rollback<C: Deployable>(
    store: &dyn EventStore,
    runtime: &Runtime,
    name: &str,
    by: Option<String>,
) -> Result<Deployed<C>, DeployError> {
    let kind = C::KIND.as_str();
    let (earlier, bytes) = match rollback_target(store.deployments(), C::KIND, name).await? {
        RollbackTarget::NotDeployed => {
            return Err(DeployError::NotDeployed(format!(
                "no {kind} {name} is deployed"
            )));
        }
        RollbackTarget::OnlyVersion(live) => {
            return Err(DeployError::NoEarlierVersion(format!(
                "{name} {} is the only version deployed",
                live.version
            )));
        }
        RollbackTarget::Earlier(earlier, None) => {
            return Err(DeployError::NoEarlierVersion(format!(
                "{name} {}: the store does not keep its bytes",
                earlier.version
            )));
        }
        RollbackTarget::Earlier(earlier, Some(bytes)) => (earlier, bytes),
    };
    let component: Arc<C> = load(runtime, bytes, origin(&earlier)).await?;
    let rolled_back = NewDeployment {
        kind: C::KIND,
        name: name.into(),
        version: earlier.version.clone(),
        digest: earlier.digest.clone(),
        action: DeployAction::RolledBack,
        reason: None,
        by,
    };
    let recorded = store
        .deployments()
        .record_deployment(&rolled_back, None)
        .await?;
    info!(kind, name, version = %earlier.version, id = recorded.id,
        by = recorded.by.as_deref().unwrap_or("-"), "rolled back");
    Ok(Deployed {
        deployment: Some(recorded),
        component,
    })
}

/// The version of the component `name` of kind `C` live in the store,
/// loaded; `None` when none is deployed.
pub async fn live<C: Deployable>(
    store: &dyn EventStore,
    runtime: &Runtime,
    name: &str,
) -> Result<Option<Arc<C>>, DeployError> {
    let live = store.deployments().live_deployments(C::KIND).await?;
    let Some(deployment) = live.into_iter().find(|d| d.name == name) else {
        return Ok(None);
    };
    let Some(bytes) = store
        .deployments()
        .component_bytes(&deployment.digest)
        .await?
    else {
        return Err(DeployError::InvalidComponent(format!(
            "{} {name} {}: the store does not keep its bytes",
            C::KIND.as_str(),
            deployment.version
        )));
    };
    Ok(Some(load(runtime, bytes, origin(&deployment)).await?))
}

/// Loads a component from its bytes, off the async runtime.
async fn load<C: Deployable>(
    runtime: &Runtime,
    bytes: Vec<u8>,
    origin: PathBuf,
) -> Result<Arc<C>, DeployError> {
    let runtime = runtime.clone();
    match tokio::task::spawn_blocking(move || C::load(&runtime, bytes, &origin)).await {
        Ok(Ok(component)) => Ok(Arc::new(component)),
        Ok(Err(e)) => Err(DeployError::InvalidComponent(e.to_string())),
        Err(e) => Err(DeployError::InvalidComponent(format!(
            "loading the component panicked: {e}"
        ))),
    }
}

/// The live set of one kind as a process that runs that kind resolves it:
/// seeding from its directory, loading from the store what it has not got.
pub struct LiveSet<C> {
    store: Arc<dyn EventStore>,
    runtime: Runtime,
    /// Live components whose bytes did not load here, by digest, with the
    /// error: not loaded again.
    unloadable: HashMap<String, String>,
    kind: std::marker::PhantomData<fn() -> C>,
}

/// What to run, and what could not be.
#[derive(Debug)]
pub struct Resolved<C> {
    /// One component per live name that loads here.
    pub live: Vec<Arc<C>>,
    /// The digest live for each name, as the store has it.
    pub digests: BTreeMap<String, String>,
    /// One line per component not seeded or not loaded.
    pub errors: Vec<String>,
}

impl<C> Default for Resolved<C> {
    fn default() -> Self {
        Self {
            live: Vec::new(),
            digests: BTreeMap::new(),
            errors: Vec::new(),
        }
    }
}

impl<C: Deployable> LiveSet<C> {
    pub fn new(store: Arc<dyn EventStore>, runtime: Runtime) -> Self {
        Self {
            store,
            runtime,
            unloadable: HashMap::new(),
            kind: std::marker::PhantomData,
        }
    }

    /// The digest live for each name.
    pub async fn digests(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let live = self.store.deployments().live_deployments(C::KIND).await?;
        Ok(live.into_iter().map(|d| (d.name, d.digest)).collect())
    }

    /// Seeds the store with each of `scanned` (a directory's components)
    /// it has never seen for its name, then resolves the live set: each
    /// live component is one of `scanned` or `loaded` with its digest, or
    /// is loaded from the bytes the store keeps.
    pub async fn resolve(
        &mut self,
        scanned: &[Arc<C>],
        loaded: &[Arc<C>],
    ) -> Result<Resolved<C>, StoreError> {
        let mut resolved = Resolved::default();
        for candidate in scanned {
            if let Err(error) = self.seed(candidate).await {
                resolved.errors.push(error);
            }
        }
        let live = self.store.deployments().live_deployments(C::KIND).await?;
        for deployment in live {
            resolved
                .digests
                .insert(deployment.name.clone(), deployment.digest.clone());
            let same = |c: &&Arc<C>| {
                c.name() == deployment.name && digest_label(c.digest()) == deployment.digest
            };
            if let Some(component) = scanned.iter().chain(loaded).find(same) {
                resolved.live.push(component.clone());
                continue;
            }
            match self.load_deployed(&deployment).await {
                Ok(component) => resolved.live.push(component),
                Err(error) => resolved.errors.push(format!(
                    "{} {} {} ({}), deployed, does not load here: {error}",
                    C::KIND.as_str(),
                    deployment.name,
                    deployment.version,
                    deployment.digest
                )),
            }
        }
        Ok(resolved)
    }

    /// Records `candidate` as seeded if the store has never seen it for
    /// its name; the line to report if it could not be.
    async fn seed(&self, candidate: &C) -> Result<(), String> {
        let kind = C::KIND.as_str();
        let digest = digest_label(candidate.digest());
        let deployments = self.store.deployments();
        let not_seeded = |why: String| {
            format!(
                "{}: {kind} {} {} not seeded: {why}",
                candidate.path().display(),
                candidate.name(),
                candidate.version()
            )
        };
        match deployments
            .deployment_of(C::KIND, candidate.name(), &digest)
            .await
        {
            Ok(Some(seen)) => {
                debug!(kind, name = %candidate.name(), version = %candidate.version(), entry = seen.id,
                    "the directory's version was deployed before; not seeded again");
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(not_seeded(format!("cannot read the deployments: {e}"))),
        }
        let bytes = tokio::fs::read(candidate.path())
            .await
            .map_err(|e| not_seeded(e.to_string()))?;
        // The file may have changed since it was loaded: only its bytes as
        // loaded are deployed.
        if hex::encode(sha2::Sha256::digest(&bytes)) != candidate.digest() {
            return Err(not_seeded(
                "it changed while it was being seeded; read again at the next look".into(),
            ));
        }
        let seeded = NewDeployment {
            kind: C::KIND,
            name: candidate.name().to_owned(),
            version: candidate.version().to_owned(),
            digest,
            action: DeployAction::Seeded,
            reason: None,
            by: None,
        };
        let recorded = deployments
            .record_deployment(&seeded, Some(&bytes))
            .await
            .map_err(|e| not_seeded(format!("cannot record it: {e}")))?;
        info!(kind, name = %candidate.name(), version = %candidate.version(), id = recorded.id,
            file = %candidate.path().display(), "deployed from the directory");
        Ok(())
    }

    /// Loads a live component from the bytes the store keeps. A component
    /// that does not load is remembered and not tried again; a store that
    /// did not answer may answer next time.
    async fn load_deployed(&mut self, deployment: &Deployment) -> Result<Arc<C>, String> {
        if let Some(error) = self.unloadable.get(&deployment.digest) {
            return Err(error.clone());
        }
        let bytes = match self
            .store
            .deployments()
            .component_bytes(&deployment.digest)
            .await
        {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                let error = "the store keeps no bytes for it".to_string();
                self.unloadable
                    .insert(deployment.digest.clone(), error.clone());
                return Err(error);
            }
            Err(e) => return Err(format!("cannot read it from the store: {e}")),
        };
        match load(&self.runtime, bytes, origin(deployment)).await {
            Ok(component) => Ok(component),
            Err(e) => {
                let error = e.to_string();
                self.unloadable
                    .insert(deployment.digest.clone(), error.clone());
                Err(error)
            }
        }
    }
}

/// A live set as a process that runs its kind follows it: each look seeds
/// and resolves within [`STORE_DEADLINE`], remembers the digests it found
/// (to tell a change) and logs each error once while it lasts.
pub struct Following<C> {
    live: LiveSet<C>,
    /// The live digest of each name, as the last look found it.
    digests: BTreeMap<String, String>,
    /// The errors the last look logged: not logged again while they last.
    logged: HashSet<String>,
}

impl<C: Deployable> Following<C> {
    pub fn new(store: Arc<dyn EventStore>, runtime: Runtime) -> Self {
        Self {
            live: LiveSet::new(store, runtime),
            digests: BTreeMap::new(),
            logged: HashSet::new(),
        }
    }

    /// Seeds the store with `scanned` (the directory as last read) and
    /// resolves the live set (see [`LiveSet::resolve`]); `None` when the
    /// store could not be read (logged).
    pub async fn look(&mut self, scanned: &[Arc<C>], loaded: &[Arc<C>]) -> Option<Vec<Arc<C>>> {
        let kind = C::KIND.as_str();
        let resolved =
            tokio::time::timeout(STORE_DEADLINE, self.live.resolve(scanned, loaded)).await;
        let Resolved {
            live,
            digests,
            errors,
        } = match resolved {
            Ok(Ok(resolved)) => resolved,
            Ok(Err(e)) => {
                self.log_once(vec![format!("cannot read the deployed {kind}s: {e}")]);
                return None;
            }
            Err(_) => {
                self.log_once(vec![format!(
                    "cannot read the deployed {kind}s: the store did not answer in time"
                )]);
                return None;
            }
        };
        self.log_once(errors);
        self.digests = digests;
        Some(live)
    }

    /// Whether the store's live set differs from the last look's (a store
    /// that does not answer in time: no).
    pub async fn changed(&self) -> bool {
        match tokio::time::timeout(STORE_DEADLINE, self.live.digests()).await {
            Ok(Ok(digests)) => digests != self.digests,
            _ => false,
        }
    }

    /// Logs each of `errors` the last look did not.
    fn log_once(&mut self, errors: Vec<String>) {
        for error in &errors {
            if !self.logged.contains(error) {
                warn!(kind = C::KIND.as_str(), %error, "what runs keeps running");
            }
        }
        self.logged = errors.into_iter().collect();
    }
}
