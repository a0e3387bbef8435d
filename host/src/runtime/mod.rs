//! The WebAssembly side: one wasmtime [`Engine`] per host, components loaded
//! and checked against the `aggregate-guest` world, and hydrated aggregate
//! instances living inside them.
//!
//! - [`component`]: loading one `.wasm` file into a [`LoadedComponent`].
//! - [`modules`]: the set of loaded components, by aggregate name.
//! - [`instance`]: one hydrated aggregate: a store, an instance, a state resource.

pub mod component;
pub mod instance;
pub mod modules;

pub use component::LoadedComponent;
pub use instance::Hydrated;
pub use modules::Modules;

use wasmtime::{Config, Engine};

/// Generated from `wit/aggregate.wit`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "aggregate-guest" });
}

/// Per-instance host data inside a wasmtime `Store`. The world imports
/// nothing, so there is nothing here yet; limits will live here.
#[derive(Default)]
pub struct GuestContext {}

/// Builds the engine every component of a host shares.
pub fn engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Infallible for this configuration: only the component model is switched on.
    Engine::new(&config).unwrap_or_else(|e| panic!("wasmtime rejected its configuration: {e}"))
}
