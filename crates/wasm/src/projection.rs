//! Projection guests: loading a component that exports `projection` (the
//! `projection-guest` world), and calling it one event at a time, with its
//! `view.get` import reading the projection's documents.
//!
//! Same sandbox as aggregate guests: the same limits on every call, the
//! same compiled-code cache, and no import but `host.log` and `view.get`
//! (a call to `get` is charged fuel like a log line).
//!
//! [`ViewDocuments`] is what `get` reads: the changes projected since the
//! last commit, then a bounded cache of documents read from the store,
//! then the store itself.

use super::artifacts::ArtifactCache;
use super::component::{compile, compile_bytes, first_line, refuse_imports_beyond};
use super::contract::HOST_INTERFACES;
use super::sandbox::{self, GuestContext, LOG_CALL_FUEL, Limits};
use crate::error::{GuestError, LoadError};
use bindings::ProjectionGuestPre;
use bindings::exports::eshost::aggregate::projection::{Change, Manifest};
use eshost_core::view::stored_key;
use eshost_core::{DocumentChange, JsonText, RecordedEvent, storable_json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, StoreContextMut};

/// Generated from `wit/projection.wit`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({ path: "wit", world: "projection-guest" });
}

/// The interface a projection guest reads its view through.
pub const VIEW_INTERFACE: &str = "eshost:aggregate/view@0.1.0";

/// The longest key a view stores (a longer one is stored under
/// [`eshost_core::view::stored_key`]).
pub use eshost_core::view::MAX_KEY_BYTES;

/// The largest document body.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The most changes one event may make.
pub const MAX_CHANGES_PER_EVENT: usize = 1_000;

/// Bytes of documents read from the store kept for later events; past
/// this, the cache starts afresh.
pub const MAX_CACHED_DOCUMENT_BYTES: usize = 64 << 20;

/// A compiled, checked projection component.
pub struct LoadedProjection {
    /// The projection (and its view), from the manifest.
    pub name: String,
    pub version: String,
    /// The aggregate types it reads; empty for all.
    pub aggregates: Vec<String>,
    /// sha256 of the component file, hex.
    pub digest: String,
    pub path: PathBuf,
    pub limits: Limits,
    engine: Engine,
    tag: Arc<str>,
    pre: ProjectionGuestPre<GuestContext<ViewDocuments>>,
}

impl std::fmt::Debug for LoadedProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProjection")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedProjection {
    /// Reads, compiles (or takes from `cache`) and checks the projection
    /// component at `path`.
    pub fn load(
        engine: &Engine,
        limits: Limits,
        cache: Option<&ArtifactCache>,
        path: &Path,
    ) -> Result<Self, LoadError> {
        let (component, digest) = compile(engine, cache, path)?;
        Self::check(engine, limits, path, digest, component)
    }

    /// Compiles (or takes from `cache`) and checks a projection component
    /// from its bytes (from the store, an upload); `origin` names where
    /// they came from in messages and in [`LoadedProjection::path`].
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

    /// Checks a compiled component against the `projection-guest` world
    /// and reads its manifest.
    fn check(
        engine: &Engine,
        limits: Limits,
        path: &Path,
        digest: String,
        component: wasmtime::component::Component,
    ) -> Result<Self, LoadError> {
        refuse_imports_beyond(
            engine,
            &component,
            path,
            "a projection guest",
            // Any contract version's `log`: an aggregate guest loaded
            // here by mistake is then told it is not a projection.
            &[
                HOST_INTERFACES[0],
                HOST_INTERFACES[1],
                HOST_INTERFACES[2],
                VIEW_INTERFACE,
            ],
        )?;
        let mut linker: Linker<GuestContext<ViewDocuments>> = Linker::new(engine);
        sandbox::link_host(&mut linker).map_err(|e| LoadError::new(path, first_line(&e)))?;
        link_view(&mut linker).map_err(|e| LoadError::new(path, first_line(&e)))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(path, first_line(&e)))?;
        let pre = ProjectionGuestPre::new(instance_pre).map_err(|e| {
            LoadError::new(
                path,
                format!(
                    "not an eshost projection guest (projection-guest@0.1.0): {}",
                    first_line(&e)
                ),
            )
        })?;
        let manifest = describe(engine, &limits, &pre).map_err(|e| LoadError::new(path, e))?;
        check_manifest(&manifest).map_err(|e| LoadError::new(path, e))?;
        Ok(Self {
            tag: Arc::from(manifest.name.as_str()),
            name: manifest.name,
            version: manifest.version,
            aggregates: manifest.aggregates,
            digest,
            path: path.to_path_buf(),
            limits,
            engine: engine.clone(),
            pre,
        })
    }

    /// Does this projection read `aggregate`'s events?
    pub fn reads(&self, aggregate: &str) -> bool {
        self.aggregates.is_empty() || self.aggregates.iter().any(|a| a == aggregate)
    }
}

fn describe(
    engine: &Engine,
    limits: &Limits,
    pre: &ProjectionGuestPre<GuestContext<ViewDocuments>>,
) -> Result<Manifest, String> {
    let context = GuestContext::with_view(Arc::from("(loading)"), limits, ViewDocuments::empty());
    let mut store = sandbox::new_store_with(engine, context);
    sandbox::arm(&mut store, limits);
    let guest = pre.instantiate(&mut store).map_err(|e| {
        let failure = sandbox::classify(store.data_mut(), limits, "instantiate", e);
        format!("instantiating failed: {failure}")
    })?;
    guest
        .eshost_aggregate_projection()
        .call_describe(&mut store)
        .map_err(|e| {
            let failure = sandbox::classify(store.data_mut(), limits, "describe", e);
            format!("describe failed: {failure}")
        })
}

fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    use super::component::{MAX_DECLARED, MAX_NAME_BYTES};
    let name = &manifest.name;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.chars().all(valid) {
        return Err(format!(
            "projection name {:?} is not 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.'",
            one_line(name)
        ));
    }
    if manifest.version.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{name}: the version is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            manifest.version.len()
        ));
    }
    if manifest.aggregates.len() > MAX_DECLARED
        || manifest.aggregates.iter().any(|a| a.len() > MAX_NAME_BYTES)
    {
        return Err(format!(
            "{name}: at most {MAX_DECLARED} aggregates of at most {MAX_NAME_BYTES} bytes each"
        ));
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    sandbox::one_line(text, 200)
}

/// Links `view.get`: the document under a key, as [`ViewDocuments`] holds it.
/// A store that fails the read traps the call (the projector tells that
/// trap from the guest's failures and retries the event).
fn link_view(linker: &mut Linker<GuestContext<ViewDocuments>>) -> wasmtime::Result<()> {
    linker.instance(VIEW_INTERFACE)?.func_wrap(
        "get",
        |mut store: StoreContextMut<'_, GuestContext<ViewDocuments>>, (key,): (String,)| {
            sandbox::charge_fuel(&mut store, LOG_CALL_FUEL.saturating_add(key.len() as u64))?;
            let document = store.data_mut().view.get(&stored_key(&key))?;
            let length = document.as_ref().map_or(0, |d| d.as_str().len());
            sandbox::charge_fuel(&mut store, length as u64)?;
            Ok((document.map(|d| d.as_str().to_owned()),))
        },
    )
}

/// Why a document could not be read from where the view lives: the
/// store's error, boxed, since the sandbox does not know the store.
pub type ViewReadError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a document a view's cache does not hold: from the store.
pub type LoadDocument = Box<dyn FnMut(&str) -> Result<Option<JsonText>, ViewReadError> + Send>;

/// What a projection's `view.get` reads, and the changes projected since
/// the last commit.
pub struct ViewDocuments {
    /// Changes since the last commit, the latest per key.
    pending: HashMap<String, Option<JsonText>>,
    pending_bytes: usize,
    /// Documents as committed (`None`: known absent), read from the store.
    cache: HashMap<String, Option<JsonText>>,
    cache_bytes: usize,
    load: LoadDocument,
    /// Why the last `get` could not be answered.
    failure: Option<ViewReadError>,
}

impl ViewDocuments {
    pub fn new(load: LoadDocument) -> Self {
        Self {
            pending: HashMap::new(),
            pending_bytes: 0,
            cache: HashMap::new(),
            cache_bytes: 0,
            load,
            failure: None,
        }
    }

    /// A view with no documents (for `describe`, and specs without a store).
    pub fn empty() -> Self {
        Self::new(Box::new(|_| Ok(None)))
    }

    fn get(&mut self, key: &str) -> wasmtime::Result<Option<JsonText>> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.clone());
        }
        if let Some(cached) = self.cache.get(key) {
            return Ok(cached.clone());
        }
        match (self.load)(key) {
            Ok(document) => {
                self.cache_bytes += key.len() + document.as_ref().map_or(0, |d| d.as_str().len());
                if self.cache_bytes > MAX_CACHED_DOCUMENT_BYTES {
                    self.cache.clear();
                    self.cache_bytes = 0;
                }
                self.cache.insert(key.to_owned(), document.clone());
                Ok(document)
            }
            Err(e) => {
                let message = format!("reading the view failed: {e}");
                self.failure = Some(e);
                Err(wasmtime::Error::msg(message))
            }
        }
    }

    /// Records changes an event made (checked), on top of earlier ones.
    fn record(&mut self, changes: Vec<DocumentChange>) {
        for change in changes {
            let size = change.key.len() + change.body.as_ref().map_or(0, |b| b.as_str().len());
            self.pending_bytes += size;
            self.pending.insert(change.key, change.body);
        }
    }

    /// Bytes of changes recorded since the last commit (an upper bound).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The changes since the last commit, one per key. They stay pending
    /// until [`committed`](Self::committed) or [`forget`](Self::forget).
    pub fn pending(&self) -> Vec<DocumentChange> {
        self.pending
            .iter()
            .map(|(key, body)| DocumentChange {
                key: key.clone(),
                body: body.clone(),
            })
            .collect()
    }

    /// The pending changes are in the store: they are what later reads see.
    pub fn committed(&mut self) {
        for (key, body) in self.pending.drain() {
            self.cache_bytes += key.len() + body.as_ref().map_or(0, |b| b.as_str().len());
            self.cache.insert(key, body);
        }
        self.pending_bytes = 0;
        if self.cache_bytes > MAX_CACHED_DOCUMENT_BYTES {
            self.cache.clear();
            self.cache_bytes = 0;
        }
    }

    /// Drops the pending changes and the cache: the store holds something
    /// else than this view thought (another writer moved its checkpoint).
    pub fn forget(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.cache.clear();
        self.cache_bytes = 0;
    }

    /// Takes the store failure that ended the last call, if one did.
    fn take_failure(&mut self) -> Option<ViewReadError> {
        self.failure.take()
    }
}

/// Why an event could not be projected.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The guest failed the event (an error, a trap, a broken limit, a
    /// change the host cannot apply): the projection stops here.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// Reading the view from the store failed: try the event again.
    #[error("{0}")]
    View(ViewReadError),
}

/// One instance of a projection guest, with the view it reads.
pub struct ProjectionInstance {
    pub component: Arc<LoadedProjection>,
    store: Store<GuestContext<ViewDocuments>>,
    guest: bindings::ProjectionGuest,
}

impl ProjectionInstance {
    /// An instance reading `documents`; if instantiating fails, the error
    /// and the documents back (boxed: they are large).
    pub fn new(
        component: Arc<LoadedProjection>,
        documents: ViewDocuments,
    ) -> Result<Self, Box<(GuestError, ViewDocuments)>> {
        let limits = component.limits;
        let context = GuestContext::with_view(component.tag.clone(), &limits, documents);
        let mut store = sandbox::new_store_with(&component.engine, context);
        sandbox::arm(&mut store, &limits);
        match component.pre.instantiate(&mut store) {
            Ok(guest) => Ok(Self {
                component,
                store,
                guest,
            }),
            Err(e) => {
                let error = sandbox::classify(store.data_mut(), &limits, "instantiate", e);
                Err(Box::new((error, take_view(&mut store))))
            }
        }
    }

    pub fn documents(&mut self) -> &mut ViewDocuments {
        &mut self.store.data_mut().view
    }

    /// The view, for a new instance after this one failed.
    pub fn into_documents(mut self) -> ViewDocuments {
        take_view(&mut self.store)
    }

    /// Projects one event: its changes, checked, are recorded as pending in
    /// the view. On an error nothing of the event is recorded; after a
    /// trap the instance must not be called again.
    pub fn project(&mut self, event: &RecordedEvent) -> Result<(), ProjectError> {
        let limits = self.component.limits;
        sandbox::arm(&mut self.store, &limits);
        let metadata = event.metadata.to_string();
        let argument = bindings::exports::eshost::aggregate::projection::RecordedEvent {
            position: event.position,
            aggregate: event.aggregate.clone(),
            id: event.id.clone(),
            sequence: event.sequence,
            name: event.name.clone(),
            payload: event.payload.as_str().to_owned(),
            metadata,
        };
        let returned = self
            .guest
            .eshost_aggregate_projection()
            .call_project(&mut self.store, &argument);
        let failed = |message: String| {
            ProjectError::Guest(GuestError::ProjectionFailed {
                projection: self.component.name.clone(),
                message,
            })
        };
        let changes = match returned {
            Ok(Ok(changes)) => changes,
            Ok(Err(message)) => return Err(failed(sandbox::one_line(&message, 1024))),
            Err(e) => {
                if let Some(store_failure) = self.store.data_mut().view.take_failure() {
                    return Err(ProjectError::View(store_failure));
                }
                return Err(sandbox::classify(self.store.data_mut(), &limits, "project", e).into());
            }
        };
        let checked = checked_changes(changes).map_err(failed)?;
        self.store.data_mut().view.record(checked);
        Ok(())
    }
}

/// The view out of a store about to be dropped.
fn take_view(store: &mut Store<GuestContext<ViewDocuments>>) -> ViewDocuments {
    std::mem::replace(&mut store.data_mut().view, ViewDocuments::empty())
}

/// The changes a guest returned, as the store takes them; or why they
/// cannot be applied.
fn checked_changes(changes: Vec<Change>) -> Result<Vec<DocumentChange>, String> {
    if changes.len() > MAX_CHANGES_PER_EVENT {
        return Err(format!(
            "one event made {} changes; at most {MAX_CHANGES_PER_EVENT} are allowed",
            changes.len()
        ));
    }
    changes
        .into_iter()
        .map(|change| {
            let (key, body) = match change {
                Change::Upsert(document) => (document.key, Some(document.body)),
                Change::Delete(key) => (key, None),
            };
            if key.is_empty() || key.contains('\0') {
                return Err(format!(
                    "document key {:?} is empty or holds a NUL",
                    one_line(&key)
                ));
            }
            let key = match key.len() > MAX_KEY_BYTES {
                true => stored_key(&key).into_owned(),
                false => key,
            };
            let body = match body {
                None => None,
                Some(body) if body.len() > MAX_DOCUMENT_BYTES => {
                    return Err(format!(
                        "document {key:?} is {} bytes; at most {MAX_DOCUMENT_BYTES} are allowed",
                        body.len()
                    ));
                }
                Some(body) => {
                    storable_json(&body).map_err(|reason| {
                        format!("document {key:?} is not storable JSON: {reason}")
                    })?;
                    Some(JsonText::new(body).map_err(|e| format!("document {key:?}: {e}"))?)
                }
            };
            Ok(DocumentChange { key, body })
        })
        .collect()
}
