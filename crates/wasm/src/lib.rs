//! The WebAssembly side of eshost: one wasmtime [`Engine`] per host,
//! components loaded and checked against the `aggregate-guest` world, and
//! hydrated aggregate instances living inside them. It knows events
//! ([`eshost_core`]) but not where they are stored.
//!
//! - [`error`]: a guest that refused, misbehaved or could not be loaded.
//! - [`contract`]: the WIT bindings, both versions of the aggregate contract.
//! - [`component`]: loading one `.wasm` file into a [`LoadedComponent`].
//! - [`modules`]: the set of loaded components, by aggregate name.
//! - [`instance`]: one hydrated aggregate: a state resource in an instance.
//! - [`shared_instance`]: instances shared by many aggregates' states.
//! - [`projection`]: projection guests, which build views from events.
//! - [`reactor`]: reactor guests, which answer events with actions.
//! - [`sandbox`]: the limits on every guest call and the one import, `log`.
//! - [`artifacts`]: the on-disk cache of compiled components.
//! - [`pool`]: the bounded threads guest calls run on, off the async runtime.
//! - [`watch`]: watching a directory of components for changes.

pub mod artifacts;
pub mod component;
pub mod contract;
pub mod error;
pub mod instance;
pub mod modules;
pub mod pool;
pub mod projection;
pub mod reactor;
pub mod sandbox;
pub(crate) mod shared_instance;
pub mod watch;

pub use artifacts::ArtifactCache;
pub use component::LoadedComponent;
pub use error::{ApplyFailure, GuestError, LoadError, Refusal};
pub use instance::Hydrated;
pub use modules::Modules;
pub use pool::{GuestPool, PoolPanic};
pub use projection::{LoadedProjection, ProjectionInstance, ViewDocuments};
pub use reactor::{LoadedReactor, ReactorInstance};
pub use sandbox::{Budget, GuestContext, Limits};

use std::path::Path;
use std::sync::Arc;
use wasmtime::{Config, Engine};

/// The engine every component of a host shares, the limits on every guest
/// call, and where compiled components are cached.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    cache: Option<ArtifactCache>,
}

impl Runtime {
    /// A runtime with the default [`Limits`], compiling every component it loads.
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A runtime whose guest calls are bounded by `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        let mut config = Config::new();
        config.wasm_component_model(true);
        sandbox::configure(&mut config, limits.budget);
        // Infallible for these settings: the component model plus fuel or epochs.
        let engine = Engine::new(&config)
            .unwrap_or_else(|e| panic!("wasmtime rejected its configuration: {e}"));
        if let Budget::WallClock(_) = limits.budget {
            sandbox::start_epoch_ticker(&engine);
        }
        Self {
            engine,
            limits,
            cache: None,
        }
    }

    /// Keeps compiled components in `dir` (see [`artifacts`]).
    pub fn with_cache_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cache = Some(ArtifactCache::new(&self.engine, dir));
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// Loads and checks one component file.
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        LoadedComponent::load(&self.engine, self.limits, self.cache.as_ref(), path)
    }

    /// Loads and checks a component from its bytes (a deployment kept in
    /// the store, an upload); `origin` names where they came from in
    /// messages and in [`LoadedComponent::path`].
    pub fn load_bytes(&self, bytes: Vec<u8>, origin: &Path) -> Result<LoadedComponent, LoadError> {
        LoadedComponent::load_bytes(
            &self.engine,
            self.limits,
            self.cache.as_ref(),
            origin,
            bytes,
        )
    }

    /// Loads and checks one projection component file.
    pub fn load_projection(&self, path: &Path) -> Result<LoadedProjection, LoadError> {
        LoadedProjection::load(&self.engine, self.limits, self.cache.as_ref(), path)
    }

    /// Loads a projection component from its bytes; `origin` names where
    /// they came from (see [`Runtime::load_bytes`]).
    pub fn load_projection_bytes(
        &self,
        bytes: Vec<u8>,
        origin: &Path,
    ) -> Result<LoadedProjection, LoadError> {
        LoadedProjection::load_bytes(
            &self.engine,
            self.limits,
            self.cache.as_ref(),
            origin,
            bytes,
        )
    }

    /// Loads and checks one reactor component file.
    pub fn load_reactor(&self, path: &Path) -> Result<LoadedReactor, LoadError> {
        LoadedReactor::load(&self.engine, self.limits, self.cache.as_ref(), path)
    }

    /// Loads a reactor component from its bytes; `origin` names where they
    /// came from (see [`Runtime::load_bytes`]).
    pub fn load_reactor_bytes(
        &self,
        bytes: Vec<u8>,
        origin: &Path,
    ) -> Result<LoadedReactor, LoadError> {
        LoadedReactor::load_bytes(
            &self.engine,
            self.limits,
            self.cache.as_ref(),
            origin,
            bytes,
        )
    }

    /// Loads every `*.wasm` in `dir` as a reactor, in name order; all or
    /// nothing. Two claiming one name is an error.
    pub fn load_reactors(&self, dir: &Path) -> Result<Vec<Arc<LoadedReactor>>, LoadError> {
        let mut loaded: Vec<Arc<LoadedReactor>> = Vec::new();
        for path in modules::wasm_files(dir)? {
            let reactor = self.load_reactor(&path)?;
            if let Some(existing) = loaded.iter().find(|r| r.name == reactor.name) {
                return Err(LoadError::new(
                    &path,
                    format!(
                        "reactor {} is already provided by {}",
                        reactor.name,
                        existing.path.display()
                    ),
                ));
            }
            loaded.push(Arc::new(reactor));
        }
        Ok(loaded)
    }

    /// Loads every `*.wasm` in `dir` as a projection, in name order; all or
    /// nothing, like [`Modules::load_dir`]. Two claiming one name is an error.
    pub fn load_projections(&self, dir: &Path) -> Result<Vec<Arc<LoadedProjection>>, LoadError> {
        let mut loaded: Vec<Arc<LoadedProjection>> = Vec::new();
        for path in modules::wasm_files(dir)? {
            let projection = self.load_projection(&path)?;
            if let Some(existing) = loaded.iter().find(|p| p.name == projection.name) {
                return Err(LoadError::new(
                    &path,
                    format!(
                        "projection {} is already provided by {}",
                        projection.name,
                        existing.path.display()
                    ),
                ));
            }
            loaded.push(Arc::new(projection));
        }
        Ok(loaded)
    }

    /// Loads `dir`'s projections again, keeping each of `current` whose
    /// file is unchanged: for hot reload, so not all or nothing. A file
    /// that fails to load keeps the version loaded from it before, if any,
    /// and one that claims a name a running (or earlier) file has is left
    /// out; each
    /// adds a line to the errors.
    pub fn reload_projections(
        &self,
        dir: &Path,
        current: &[Arc<LoadedProjection>],
    ) -> (Vec<Arc<LoadedProjection>>, Vec<String>) {
        let mut paths = match modules::wasm_files(dir) {
            Ok(paths) => paths,
            Err(e) => return (current.to_vec(), vec![e.to_string()]),
        };
        // Files already running come first: a newcomer claiming the same
        // name cannot displace them.
        paths.sort_by_key(|path| !current.iter().any(|p| &p.path == path));
        let mut loaded: Vec<Arc<LoadedProjection>> = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            let running = current.iter().find(|p| p.path == path);
            let unchanged = running
                .filter(|p| component::file_digest(&path).is_ok_and(|digest| digest == p.digest));
            let projection = match unchanged {
                Some(projection) => projection.clone(),
                None => match self.load_projection(&path) {
                    Ok(projection) => Arc::new(projection),
                    Err(e) => {
                        errors.push(e.to_string());
                        match running {
                            Some(running) => running.clone(),
                            None => continue,
                        }
                    }
                },
            };
            match loaded.iter().find(|p| p.name == projection.name) {
                Some(existing) => errors.push(format!(
                    "{}: projection {} is already provided by {}",
                    path.display(),
                    projection.name,
                    existing.path.display()
                )),
                None => loaded.push(projection),
            }
        }
        (loaded, errors)
    }

    /// Loads every `*.wasm` in `dir` (see [`Modules::load_dir`]).
    pub fn load_dir(&self, dir: &Path) -> Result<Modules, LoadError> {
        Modules::load_dir(self, dir)
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}
