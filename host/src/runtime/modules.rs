//! The loaded components, by aggregate name.

use super::{LoadedComponent, Runtime};
use crate::error::LoadError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a loaded aggregate is, as `eshost aggregates --json` and
/// `GET /v1/aggregates` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AggregateInfo {
    pub name: String,
    pub version: String,
    /// `sha256:` and the component file's digest.
    pub digest: String,
    pub file: PathBuf,
    pub commands: Vec<String>,
    /// In name order.
    pub events: Vec<String>,
}

impl From<&LoadedComponent> for AggregateInfo {
    fn from(c: &LoadedComponent) -> Self {
        let mut events: Vec<String> = c.events.iter().cloned().collect();
        events.sort();
        Self {
            name: c.name.clone(),
            version: c.version.clone(),
            digest: format!("sha256:{}", c.digest),
            file: c.path.clone(),
            commands: c.commands.clone(),
            events,
        }
    }
}

/// Every aggregate this host can run. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Modules {
    by_name: BTreeMap<String, Arc<LoadedComponent>>,
}

impl Modules {
    /// Loads every `*.wasm` in `dir`, in name order. Any file that fails to
    /// load fails the whole call, naming the file and the reason: a host never
    /// runs with part of its modules silently missing, and two components
    /// claiming one aggregate is an error, not a race.
    pub fn load_dir(runtime: &Runtime, dir: &Path) -> Result<Self, LoadError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| LoadError::new(dir, format!("cannot read modules directory: {e}")))?;
        let mut paths: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        paths.sort();
        let mut modules = Self::default();
        for path in paths {
            modules.insert(runtime.load(&path)?)?;
        }
        Ok(modules)
    }

    /// Adds a component; refuses a second one claiming the same aggregate.
    pub fn insert(&mut self, component: LoadedComponent) -> Result<(), LoadError> {
        if let Some(existing) = self.by_name.get(&component.name) {
            return Err(LoadError::new(
                &component.path,
                format!(
                    "aggregate {} is already provided by {}",
                    component.name,
                    existing.path.display()
                ),
            ));
        }
        self.by_name
            .insert(component.name.clone(), Arc::new(component));
        Ok(())
    }

    pub fn get(&self, aggregate: &str) -> Option<&Arc<LoadedComponent>> {
        self.by_name.get(aggregate)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedComponent>> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every aggregate, in name order.
    pub fn describe(&self) -> Vec<AggregateInfo> {
        self.iter().map(|c| AggregateInfo::from(&**c)).collect()
    }
}
