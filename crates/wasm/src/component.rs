//! Loading one component file: compile it, check that it is an aggregate guest
//! that imports nothing but `host.log`, and read its manifest.

use super::artifacts::ArtifactCache;
use super::contract::{GuestPre, HOST_INTERFACES, Manifest};
use super::sandbox::{self, GuestContext, Limits};
use super::shared_instance::InstanceSet;
use crate::error::LoadError;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// A compiled, checked component, ready to instantiate cheaply.
pub struct LoadedComponent {
    /// The aggregate this component implements, from its manifest.
    pub name: String,
    /// The guest's own version of its logic, from its manifest.
    pub version: String,
    /// Commands the guest declares; others are refused before calling it.
    pub commands: Vec<String>,
    /// Events the guest declares; it may return no others.
    pub events: HashSet<String>,
    /// Old event names the guest still applies (upcasts) but never returns.
    pub old_events: HashSet<String>,
    /// The events that hold personal data, and where (contract 0.3.0).
    pub personal: Vec<eshost_core::PersonalEvent>,
    /// sha256 of the component file, hex; recorded with every event.
    pub digest: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    pub(crate) engine: Engine,
    /// The limits every call into this component runs under.
    pub limits: Limits,
    /// The aggregate name, shared with every instance's log lines.
    pub(crate) tag: Arc<str>,
    /// Imports resolved and exports type-checked once, so each instance is cheap.
    pub(crate) pre: GuestPre,
    /// The instances hydrated aggregates of this component live in.
    pub(crate) instances: InstanceSet,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedComponent {
    /// Reads, compiles (or takes from `cache`) and checks the component at `path`.
    pub fn load(
        engine: &Engine,
        limits: Limits,
        cache: Option<&ArtifactCache>,
        path: &Path,
    ) -> Result<Self, LoadError> {
        let (component, digest) = compile(engine, cache, path)?;
        Self::check(engine, limits, path, digest, component)
    }

    /// Compiles (or takes from `cache`, by digest) and checks a component
    /// from its bytes; `origin` stands for its path.
    pub fn load_bytes(
        engine: &Engine,
        limits: Limits,
        cache: Option<&ArtifactCache>,
        origin: &Path,
        bytes: Vec<u8>,
    ) -> Result<Self, LoadError> {
        let (component, digest) = compile_bytes(engine, cache, origin, bytes)?;
        Self::check(engine, limits, origin, digest, component)
    }

    /// Checks a compiled component against the `aggregate-guest` world and
    /// reads its manifest.
    fn check(
        engine: &Engine,
        limits: Limits,
        path: &Path,
        digest: String,
        component: Component,
    ) -> Result<Self, LoadError> {
        refuse_imports_beyond(
            engine,
            &component,
            path,
            "an aggregate guest",
            &HOST_INTERFACES,
        )?;
        let mut linker: Linker<GuestContext> = Linker::new(engine);
        sandbox::link_host(&mut linker).map_err(|e| LoadError::new(path, first_line(&e)))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(path, first_line(&e)))?;
        let pre = GuestPre::new(instance_pre).map_err(|e| {
            LoadError::new(
                path,
                format!(
                    "not an eshost:aggregate guest (0.1.0, 0.2.0 or 0.3.0): {}",
                    first_line(&e)
                ),
            )
        })?;
        let manifest = describe(engine, &limits, &pre).map_err(|e| LoadError::new(path, e))?;
        check_manifest(&manifest).map_err(|e| LoadError::new(path, e))?;
        let tag = Arc::from(manifest.name.as_str());
        Ok(Self {
            name: manifest.name,
            version: manifest.version,
            commands: manifest.commands,
            events: manifest.events.into_iter().collect(),
            old_events: manifest.old_events.into_iter().collect(),
            personal: manifest.personal,
            digest,
            path: path.to_path_buf(),
            engine: engine.clone(),
            limits,
            tag,
            pre,
            instances: InstanceSet::default(),
        })
    }

    /// Instances of this component alive now, and how many were lost to
    /// traps since it was loaded.
    pub fn instances(&self) -> (usize, usize) {
        (self.instances.alive(), self.instances.lost())
    }

    /// The version of the aggregate contract the component implements.
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// Whether `apply` reads events of this name: declared, or old.
    pub fn reads(&self, event: &str) -> bool {
        self.events.contains(event) || self.old_events.contains(event)
    }

    pub fn accepts(&self, command: &str) -> bool {
        self.commands.iter().any(|c| c == command)
    }
}

/// The sha256 (hex) of the file at `path`: what tells a changed component
/// from the one loaded.
pub(crate) fn file_digest(path: &Path) -> std::io::Result<String> {
    std::fs::read(path).map(|bytes| hex::encode(Sha256::digest(&bytes)))
}

/// Reads and compiles (or takes from `cache`) the component at `path`;
/// returns it with the file's sha256 (hex). With a cache, an unchanged
/// file is neither read nor hashed (see [`ArtifactCache`]).
pub(crate) fn compile(
    engine: &Engine,
    cache: Option<&ArtifactCache>,
    path: &Path,
) -> Result<(Component, String), LoadError> {
    let (compiled, digest) = match cache {
        Some(cache) => {
            let (digest, bytes) = cache.digest_of(path).map_err(|e| LoadError::new(path, e))?;
            (cache.component(engine, &digest, path, bytes), digest)
        }
        None => {
            let bytes = std::fs::read(path).map_err(|e| LoadError::new(path, e))?;
            let digest = hex::encode(Sha256::digest(&bytes));
            (Component::new(engine, &bytes), digest)
        }
    };
    let component = compiled.map_err(|e| {
        LoadError::new(
            path,
            format!("not a WebAssembly component: {}", first_line(&e)),
        )
    })?;
    Ok((component, digest))
}

/// Compiles a component from its bytes (or takes it from `cache`);
/// `origin` names where they came from in errors. Returns it with its
/// sha256, hex.
pub(crate) fn compile_bytes(
    engine: &Engine,
    cache: Option<&ArtifactCache>,
    origin: &Path,
    bytes: Vec<u8>,
) -> Result<(Component, String), LoadError> {
    let digest = hex::encode(Sha256::digest(&bytes));
    let compiled = match cache {
        Some(cache) => cache.component(engine, &digest, origin, Some(bytes)),
        None => Component::new(engine, &bytes),
    };
    let component = compiled.map_err(|e| {
        LoadError::new(
            origin,
            format!("not a WebAssembly component: {}", first_line(&e)),
        )
    })?;
    Ok((component, digest))
}

/// Refuses a component that imports anything beyond the `allowed`
/// interfaces, naming what it imports and what `kind` of guest may.
pub(crate) fn refuse_imports_beyond(
    engine: &Engine,
    component: &Component,
    path: &Path,
    kind: &str,
    allowed: &[&str],
) -> Result<(), LoadError> {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| !allowed.contains(&name.as_str()))
        .collect();
    if imports.is_empty() {
        return Ok(());
    }
    // Language toolchains add WASI unless told not to: say how.
    let hint = match imports.iter().any(|name| name.starts_with("wasi:")) {
        true => {
            " (built with WASI: componentize-js needs disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'], componentize-py needs --stub-wasi)"
        }
        false => "",
    };
    Err(LoadError::new(
        path,
        format!(
            "imports {}; {kind} may import nothing but {}{hint}",
            imports.join(", "),
            allowed.join(" and ")
        ),
    ))
}

/// wasmtime errors carry their causes on later lines; a load error is one line.
pub(crate) fn first_line(error: &wasmtime::Error) -> String {
    format!("{error:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn describe(engine: &Engine, limits: &Limits, pre: &GuestPre) -> Result<Manifest, String> {
    let mut store = sandbox::new_store(engine, Arc::from("(loading)"), limits);
    sandbox::arm(&mut store, limits);
    // A failure says which limit or trap, as a call's failure does.
    let guest = pre.instantiate(&mut store).map_err(|e| {
        let failure = sandbox::classify(store.data_mut(), limits, "instantiate", e);
        format!("instantiating failed: {failure}")
    })?;
    guest.describe(&mut store).map_err(|e| {
        let failure = sandbox::classify(store.data_mut(), limits, "describe", e);
        format!("describe failed: {failure}")
    })
}

/// The longest aggregate, command or event name a manifest may declare.
pub const MAX_NAME_BYTES: usize = 128;

/// The most commands, and the most events, a manifest may declare.
pub const MAX_DECLARED: usize = 1_000;

fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let name = manifest.name.trim();
    if name.is_empty() {
        return Err("manifest has an empty aggregate name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the aggregate name is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if name.starts_with('$') {
        return Err(format!(
            "{name}: aggregate names starting with '$' are the host's own (such as $subjects)"
        ));
    }
    if manifest.version.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{name}: the version is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            manifest.version.len()
        ));
    }
    if manifest.commands.is_empty() {
        return Err(format!("{name} declares no commands"));
    }
    for (what, names) in [
        ("commands", &manifest.commands),
        ("events", &manifest.events),
        ("old events", &manifest.old_events),
    ] {
        if names.len() > MAX_DECLARED {
            return Err(format!(
                "{name} declares {} {what}; at most {MAX_DECLARED} are allowed",
                names.len()
            ));
        }
        if let Some(long) = names
            .iter()
            .find(|n| n.len() > MAX_NAME_BYTES || n.is_empty())
        {
            return Err(format!(
                "{name} declares one of its {what} with a {}-byte name; names are 1 to {MAX_NAME_BYTES} bytes",
                long.len()
            ));
        }
    }
    check_personal(name, manifest)
}

/// Each declaration names an event the guest has, once, with a subject
/// field apart from its other fields.
fn check_personal(name: &str, manifest: &Manifest) -> Result<(), String> {
    if manifest.personal.len() > MAX_DECLARED {
        return Err(format!(
            "{name} declares personal data for {} events; at most {MAX_DECLARED} are allowed",
            manifest.personal.len()
        ));
    }
    let mut seen = HashSet::new();
    for declared in &manifest.personal {
        let event = &declared.event;
        if !manifest.events.contains(event) && !manifest.old_events.contains(event) {
            return Err(format!(
                "{name} declares personal data for {event}, which is not among its events"
            ));
        }
        if !seen.insert(event.as_str()) {
            return Err(format!("{name} declares personal data for {event} twice"));
        }
        if declared.fields.len() > MAX_DECLARED {
            return Err(format!(
                "{name}: {event} declares {} personal fields; at most {MAX_DECLARED} are allowed",
                declared.fields.len()
            ));
        }
        let mut fields = HashSet::new();
        for (what, field) in std::iter::once(("subject field", &declared.subject))
            .chain(declared.fields.iter().map(|f| ("personal field", f)))
        {
            if field.is_empty() || field.len() > MAX_NAME_BYTES {
                return Err(format!(
                    "{name}: {event} declares a {what} of {} bytes; names are 1 to {MAX_NAME_BYTES} bytes",
                    field.len()
                ));
            }
            if !fields.insert(field.as_str()) {
                return Err(format!(
                    "{name}: {event} declares {field} twice (the subject field is personal data already)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, commands: usize, events: usize, length: usize) -> Manifest {
        let names = |n: usize| (0..n).map(|i| format!("{i:0length$}")).collect();
        Manifest {
            name: name.into(),
            version: "1.0.0".into(),
            commands: names(commands),
            events: names(events),
            old_events: Vec::new(),
            personal: Vec::new(),
        }
    }

    #[test]
    fn names_starting_with_a_dollar_are_the_hosts() {
        assert_eq!(check_manifest(&manifest("Item$", 1, 1, 1)), Ok(()));
        assert_eq!(
            check_manifest(&manifest("$subjects", 1, 1, 1)).unwrap_err(),
            "$subjects: aggregate names starting with '$' are the host's own (such as $subjects)"
        );
    }

    #[test]
    fn personal_data_is_declared_once_per_known_event_with_a_subject_apart_from_its_fields() {
        let declare = |event: &str, subject: &str, fields: &[&str]| {
            let mut m = manifest("Item", 1, 2, 1);
            m.old_events = vec!["Old".into()];
            m.personal = vec![eshost_core::PersonalEvent {
                event: event.into(),
                subject: subject.into(),
                fields: fields.iter().map(|f| f.to_string()).collect(),
            }];
            check_manifest(&m)
        };
        assert_eq!(declare("0", "buyerId", &["address"]), Ok(()));
        assert_eq!(declare("Old", "buyerId", &[]), Ok(()));
        assert_eq!(
            declare("Shipped", "buyerId", &[]).unwrap_err(),
            "Item declares personal data for Shipped, which is not among its events"
        );
        assert_eq!(
            declare("0", "", &[]).unwrap_err(),
            "Item: 0 declares a subject field of 0 bytes; names are 1 to 128 bytes"
        );
        assert_eq!(
            declare("0", "buyerId", &["buyerId"]).unwrap_err(),
            "Item: 0 declares buyerId twice (the subject field is personal data already)"
        );
        let mut twice = manifest("Item", 1, 2, 1);
        let once = eshost_core::PersonalEvent {
            event: "0".into(),
            subject: "a".into(),
            fields: Vec::new(),
        };
        twice.personal = vec![once.clone(), once];
        assert_eq!(
            check_manifest(&twice).unwrap_err(),
            "Item declares personal data for 0 twice"
        );
    }

    #[test]
    fn a_manifest_within_bounds_is_accepted() {
        check_manifest(&manifest("Sale", 3, 3, 8)).unwrap();
        check_manifest(&manifest(
            "Sale",
            MAX_DECLARED,
            MAX_DECLARED,
            MAX_NAME_BYTES,
        ))
        .unwrap();
    }

    #[test]
    fn a_manifest_past_its_bounds_is_refused_saying_which() {
        let cases = [
            (
                manifest(&"A".repeat(200), 1, 1, 4),
                "aggregate name is 200 bytes",
            ),
            (manifest("Sale", MAX_DECLARED + 1, 1, 4), "1001 commands"),
            (manifest("Sale", 1, 1_000_000, 4), "1000000 events"),
            (manifest("Sale", 2, 1, 10_000), "10000-byte name"),
            (manifest("Sale", 0, 1, 4), "declares no commands"),
        ];
        for (manifest, expected) in cases {
            let refused = check_manifest(&manifest).unwrap_err();
            assert!(refused.contains(expected), "{refused}");
            assert!(refused.len() < 200, "{refused}");
        }
    }
}
