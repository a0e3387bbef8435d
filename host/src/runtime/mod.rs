//! The WebAssembly side: one wasmtime [`Engine`] per host, components loaded
//! and checked against the `aggregate-guest` world, and hydrated aggregate
//! instances living inside them.
//!
//! - [`component`]: loading one `.wasm` file into a [`LoadedComponent`].
//! - [`modules`]: the set of loaded components, by aggregate name.
//! - [`instance`]: one hydrated aggregate: a store, an instance, a state resource.

pub mod artifacts;
pub mod component;
pub mod instance;
pub mod modules;

pub use artifacts::ArtifactCache;
pub use component::LoadedComponent;
pub use instance::Hydrated;
pub use modules::Modules;

use crate::error::LoadError;
use std::path::Path;
use wasmtime::{Config, Engine};

/// Generated from `wit/aggregate.wit`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "aggregate-guest" });
}

/// Per-instance host data inside a wasmtime `Store`. The world imports
/// nothing, so there is nothing here yet; limits will live here.
#[derive(Default)]
pub struct GuestContext {}

/// The engine every component of a host shares, and where compiled
/// components are cached.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    cache: Option<ArtifactCache>,
}

impl Runtime {
    /// A runtime that compiles every component it loads.
    pub fn new() -> Self {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Infallible for this configuration: only the component model is switched on.
        let engine = Engine::new(&config)
            .unwrap_or_else(|e| panic!("wasmtime rejected its configuration: {e}"));
        Self {
            engine,
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

    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// Loads and checks one component file.
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        LoadedComponent::load(&self.engine, self.cache.as_ref(), path)
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
