//! The loaded components, by aggregate name.

use super::{LoadedComponent, Runtime};
use crate::error::LoadError;
pub use eshost_core::{AggregateInfo, ReloadReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `*.wasm` files in `dir`, in name order.
pub(crate) fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LoadError::new(dir, format!("cannot read modules directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    paths.sort();
    Ok(paths)
}

impl From<&LoadedComponent> for AggregateInfo {
    fn from(c: &LoadedComponent) -> Self {
        let mut events: Vec<String> = c.events.iter().cloned().collect();
        events.sort();
        let mut old_events: Vec<String> = c.old_events.iter().cloned().collect();
        old_events.sort();
        Self {
            name: c.name.clone(),
            version: c.version.clone(),
            digest: format!("sha256:{}", c.digest),
            file: c.path.clone(),
            commands: c.commands.clone(),
            events,
            old_events,
            contract: c.contract().to_string(),
            personal: c.personal.clone(),
            refused: None,
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
        let mut modules = Self::default();
        for path in wasm_files(dir)? {
            modules.insert(runtime.load(&path)?)?;
        }
        Ok(modules)
    }

    /// Adds a component; refuses a second one claiming the same aggregate.
    pub fn insert(&mut self, component: LoadedComponent) -> Result<(), LoadError> {
        self.insert_shared(Arc::new(component))
    }

    /// Adds a component already shared; refuses a second one claiming the
    /// same aggregate.
    pub fn insert_shared(&mut self, component: Arc<LoadedComponent>) -> Result<(), LoadError> {
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
        self.by_name.insert(component.name.clone(), component);
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

fn label(c: &LoadedComponent) -> String {
    format!("{} {} ({})", c.name, c.version, c.path.display())
}

impl Modules {
    /// The set a reload of `dir` gives, starting from this one (which keeps
    /// running meanwhile). Unlike [`Modules::load_dir`] it is not all or
    /// nothing: a file whose bytes did not change keeps its component (not
    /// even recompiled); a changed or new file is loaded; a file that fails
    /// to load is reported and the component it had provided, if any, stays;
    /// a new file claiming an aggregate another file already provides is
    /// refused; a file gone takes its aggregate with it.
    pub fn reload_dir(&self, runtime: &Runtime, dir: &Path) -> (Modules, ReloadReport) {
        let mut report = ReloadReport::default();
        let paths = match wasm_files(dir) {
            Ok(paths) => paths,
            Err(e) => {
                report.errors.push(e.to_string());
                return (self.clone(), report);
            }
        };
        let running: BTreeMap<&Path, &Arc<LoadedComponent>> =
            self.iter().map(|c| (c.path.as_path(), c)).collect();
        let mut kept = Vec::new();
        let mut loaded = Vec::new();
        for path in &paths {
            let current = running.get(path.as_path()).copied();
            let digest = super::component::file_digest(path);
            match (current, digest) {
                (Some(current), Ok(digest)) if current.digest == digest => {
                    kept.push(current.clone());
                }
                (current, _) => match runtime.load(path) {
                    Ok(component) => loaded.push(Arc::new(component)),
                    Err(e) => {
                        report.errors.push(e.to_string());
                        kept.extend(current.cloned());
                    }
                },
            }
        }
        // What runs now is placed first: a newcomer cannot displace it.
        let mut next = Modules::default();
        for component in kept.into_iter().chain(loaded) {
            if let Err(e) = next.insert_shared(component) {
                report.errors.push(e.to_string());
            }
        }
        self.compare(&next, &mut report);
        (next, report)
    }

    /// Fills `report`'s added, replaced, removed and unchanged lines: what
    /// changes from this set to `next`.
    pub fn compare(&self, next: &Modules, report: &mut ReloadReport) {
        self.compare_except(next, &[], report);
    }

    /// As [`compare`](Self::compare), leaving out of `unchanged` the
    /// aggregates named in `refused`: their file was refused (an error),
    /// not left as it was.
    pub fn compare_except(&self, next: &Modules, refused: &[String], report: &mut ReloadReport) {
        report.added.clear();
        report.replaced.clear();
        report.removed.clear();
        report.unchanged.clear();
        for component in next.iter() {
            match self.get(&component.name) {
                None => report.added.push(label(component)),
                Some(old) if old.digest != component.digest => report.replaced.push(format!(
                    "{} {} -> {} ({})",
                    component.name,
                    old.version,
                    component.version,
                    component.path.display()
                )),
                Some(_) if refused.contains(&component.name) => {}
                Some(_) => report.unchanged.push(label(component)),
            }
        }
        for old in self.iter() {
            if next.get(&old.name).is_none() {
                report.removed.push(label(old));
            }
        }
    }
}
