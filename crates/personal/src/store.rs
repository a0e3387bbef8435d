//! [`PersonalStore`]: an [`EventStore`] that encrypts declared personal
//! data as it appends and decrypts every event it reads. The streams and
//! the global log are its own; the other roles are the inner store's.
//! Snapshots of declaring aggregates are sealed; appending is in
//! [`append`], forgetting a subject in [`forget`].

use crate::declare::{Declarations, PersonalEvent};
use crate::keys::{DataKey, HmacKey, KeyError, Keyring, new_key};
use crate::payload::{self, Holder};
use crate::snapshots::{KeyId, SNAPSHOT_KEY, SnapshotKey, sealed_parts};
use async_trait::async_trait;
use eshost_core::erasure::Erasure;
use eshost_core::{JsonText, RecordedEvent, Snapshot, StreamId};
use eshost_store::subjects::{SubjectKey, WrappedKey};
use eshost_store::{
    AppendOutcome, AppendSignal, Catalog, Checkpoints, Deployments, EventStore, GlobalLog,
    HorizonHolder, Locks, Reactions, RecordedCommand, StoreError, StreamAppend, Streams, Subjects,
    ViewStore,
};
use lru::LruCache;
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod append;
mod forget;

/// How long a subject's key, once read, is used without reading its row
/// again: a forget on another host reaches this one's reads and writes
/// within this time.
pub const KEY_TTL: Duration = Duration::from_secs(5);

/// Subjects whose keys are kept unwrapped, at most (about 600 bytes each).
const CACHED_SUBJECTS: usize = 16_384;

/// The names of the store's lookup key and command fingerprint key among
/// its kept keys.
const LOOKUP_KEY: &str = "lookup";
const FINGERPRINT_KEY: &str = "fingerprint";

/// What a keyed command fingerprint starts with.
const KEYED_FINGERPRINT: &str = "keyed:";

/// A subject as this store last read them.
#[allow(clippy::large_enum_variant, reason = "always behind an Arc")]
enum Known {
    /// Their row exists: their id and key.
    Subject {
        pseudonym: String,
        subject: String,
        key: DataKey,
        read_at: Instant,
    },
    /// Their row is gone. A pseudonym is random and never reused, so this
    /// never changes.
    Forgotten,
}

impl Known {
    fn fresh(&self) -> bool {
        match self {
            Self::Subject { read_at, .. } => read_at.elapsed() < KEY_TTL,
            Self::Forgotten => true,
        }
    }
}

/// The event store, with declared personal data encrypted per subject.
pub struct PersonalStore {
    inner: Arc<dyn EventStore>,
    keyring: Keyring,
    lookup: HmacKey,
    /// Keys the fingerprints of declaring aggregates' commands.
    fingerprints: HmacKey,
    declarations: Declarations,
    /// By pseudonym.
    subjects: Mutex<LruCache<String, Arc<Known>>>,
    /// By lookup (the keyed hash of the subject's id).
    lookups: Mutex<LruCache<Vec<u8>, Arc<Known>>>,
    /// The store's snapshot key as last read; read again after
    /// [`KEY_TTL`], and at once after an erasure.
    snapshot_key: Mutex<Option<Arc<SnapshotKey>>>,
    /// Snapshot keys a forget replaced, newest last.
    retired: Mutex<VecDeque<KeyId>>,
}

/// The store's key `name` (an HMAC key), stored by the first host that
/// opens the store.
async fn kept_hmac_key(
    inner: &dyn EventStore,
    keyring: &Keyring,
    name: &str,
) -> Result<HmacKey, StoreError> {
    let candidate = WrappedKey {
        wrapped_key: keyring
            .wrap(&new_key().map_err(personal)?, name.as_bytes())
            .map_err(personal)?,
        master_key_id: keyring.current_id().to_owned(),
    };
    let kept = inner.subjects().keep_key(name, &candidate).await?;
    let what = format!("the store's {name} key");
    let bytes = keyring
        .unwrap(
            &kept.wrapped_key,
            &kept.master_key_id,
            name.as_bytes(),
            &what,
        )
        .map_err(personal)?;
    Ok(HmacKey::new(&bytes))
}

fn personal(e: impl std::fmt::Display) -> StoreError {
    StoreError::PersonalData(e.to_string())
}

fn cache<K: std::hash::Hash + Eq, V>() -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(CACHED_SUBJECTS).unwrap_or(NonZeroUsize::MIN),
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PersonalStore {
    /// Wraps `inner`. Reads the store's keys (stored, wrapped by the
    /// master key, by the first host that opens it): fails if the
    /// configured master keys do not open them.
    pub async fn open(
        inner: Arc<dyn EventStore>,
        keyring: Keyring,
        declarations: Declarations,
    ) -> Result<Self, StoreError> {
        let lookup = kept_hmac_key(&*inner, &keyring, LOOKUP_KEY).await?;
        let fingerprints = kept_hmac_key(&*inner, &keyring, FINGERPRINT_KEY).await?;
        let (fresh, wrapped) = SnapshotKey::generate(&keyring).map_err(personal)?;
        let kept = inner.subjects().keep_key(SNAPSHOT_KEY, &wrapped).await?;
        let snapshot_key = match kept == wrapped {
            true => fresh,
            false => SnapshotKey::unwrap(&keyring, &kept).map_err(personal)?,
        };
        Ok(Self {
            inner,
            keyring,
            lookup,
            fingerprints,
            declarations,
            subjects: cache(),
            lookups: cache(),
            snapshot_key: Mutex::new(Some(Arc::new(snapshot_key))),
            retired: Mutex::new(VecDeque::new()),
        })
    }

    /// What the guests declare; the host declares each guest's list here.
    pub fn declarations(&self) -> &Declarations {
        &self.declarations
    }

    /// The master keys this store was opened with.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The store this one wraps.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// A stored row's key and subject id.
    fn unwrap_row(&self, row: &SubjectKey) -> Result<Known, KeyError> {
        let what = format!("the key of {}", row.pseudonym);
        let bytes = self.keyring.unwrap(
            &row.wrapped_key,
            &row.master_key_id,
            row.pseudonym.as_bytes(),
            &what,
        )?;
        let key = DataKey::new(&bytes);
        let subject = key.open(&row.sealed_subject, row.pseudonym.as_bytes(), &what)?;
        Ok(Known::Subject {
            pseudonym: row.pseudonym.clone(),
            subject: String::from_utf8(subject).map_err(|_| KeyError::DoesNotOpen(what))?,
            key,
            read_at: Instant::now(),
        })
    }

    /// The events as read: each marked one's fields opened, or tombstoned.
    async fn open_events(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.learn_erasures(&events);
        let markers: Vec<Option<payload::Marker>> = events
            .iter()
            .map(|e| payload::marker_of(&e.metadata))
            .collect();
        if markers.iter().all(Option::is_none) {
            return Ok(events);
        }
        let mut known: HashMap<&str, Arc<Known>> = HashMap::new();
        let mut missing: HashSet<&str> = HashSet::new();
        {
            let mut cached = lock(&self.subjects);
            for marker in markers.iter().flatten() {
                let pseudonym = marker.subject.as_str();
                if known.contains_key(pseudonym) || missing.contains(pseudonym) {
                    continue;
                }
                match cached.get(pseudonym).filter(|k| k.fresh()) {
                    Some(k) => {
                        known.insert(pseudonym, k.clone());
                    }
                    None => {
                        missing.insert(pseudonym);
                    }
                }
            }
        }
        if !missing.is_empty() {
            let missing: Vec<&str> = missing.into_iter().collect();
            let rows = self.inner.subjects().subject_keys(&missing).await?;
            let rows: HashMap<&str, &SubjectKey> =
                rows.iter().map(|r| (r.pseudonym.as_str(), r)).collect();
            let mut cached = lock(&self.subjects);
            for pseudonym in missing {
                let entry = match rows.get(pseudonym) {
                    Some(row) => Arc::new(self.unwrap_row(row).map_err(personal)?),
                    None => Arc::new(Known::Forgotten),
                };
                cached.put(pseudonym.to_owned(), entry.clone());
                known.insert(pseudonym, entry);
            }
        }
        for (event, marker) in events.iter_mut().zip(&markers) {
            let Some(marker) = marker else { continue };
            let holder = match known.get(marker.subject.as_str()).map(|k| &**k) {
                Some(Known::Subject { subject, key, .. }) => Holder::Known { subject, key },
                _ => Holder::Forgotten,
            };
            let text = payload::open(event.payload.as_str(), &event.name, marker, &holder)
                .map_err(personal)?;
            event.payload = JsonText::new(text).map_err(personal)?;
        }
        Ok(events)
    }
}

#[async_trait]
impl EventStore for PersonalStore {
    fn streams(&self) -> &dyn Streams {
        self
    }

    fn log(&self) -> &dyn GlobalLog {
        self
    }

    fn checkpoints(&self) -> &dyn Checkpoints {
        self.inner.checkpoints()
    }

    fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog()
    }

    fn locks(&self) -> &dyn Locks {
        self.inner.locks()
    }

    fn views(&self) -> &dyn ViewStore {
        self.inner.views()
    }

    fn deployments(&self) -> &dyn Deployments {
        self.inner.deployments()
    }

    fn reactions(&self) -> &dyn Reactions {
        self.inner.reactions()
    }

    fn subjects(&self) -> &dyn Subjects {
        self.inner.subjects()
    }

    fn declare_personal(&self, aggregate: &str, events: &[PersonalEvent]) {
        self.declarations.declare(aggregate, events.iter().cloned());
    }

    fn keeps_personal_data(&self) -> bool {
        true
    }

    fn command_fingerprint(&self, aggregate: &str, name: &str, payload: &str) -> String {
        if !self.declarations.declares(aggregate) {
            return eshost_core::command::fingerprint(name, payload);
        }
        let keyed = self
            .fingerprints
            .sign(&[name.as_bytes(), &[0], payload.as_bytes()]);
        format!("{KEYED_FINGERPRINT}{}", hex::encode(keyed))
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<Erasure>, StoreError> {
        self.forget(subject).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl Streams for PersonalStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let streams = self.inner.streams();
        let Some(stored) = streams.load_snapshot(stream, component_digest).await? else {
            return Ok(None);
        };
        if sealed_parts(&stored.state).is_none() {
            return Ok(Some(stored));
        }
        // Sealed under a key a forget replaced since: it may hold the
        // forgotten subject, and the stream is replayed instead.
        let Some(key) = self.snapshot_key().await? else {
            return Ok(None);
        };
        let state = key.open(stream, component_digest, stored.version, &stored.state);
        Ok(state.map(|state| Snapshot {
            version: stored.version,
            state,
        }))
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        let streams = self.inner.streams();
        if !self.declarations.declares(&stream.aggregate) {
            return streams
                .save_snapshot(stream, component_digest, snapshot)
                .await;
        }
        // While a forget is replacing the key, no snapshot is written: the
        // state may hold the subject being forgotten.
        let Some(key) = self.snapshot_key().await? else {
            return Ok(());
        };
        let state = key
            .seal(stream, component_digest, snapshot.version, &snapshot.state)
            .map_err(personal)?;
        let sealed = Snapshot {
            version: snapshot.version,
            state,
        };
        streams
            .save_snapshot(stream, component_digest, &sealed)
            .await
    }

    async fn load_page(
        &self,
        stream: &StreamId,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.streams().load_page(stream, after, limit).await?;
        self.open_events(events).await
    }

    async fn append_group(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        // A store no loaded guest declares anything to appends as it is.
        if self.declarations.is_empty() {
            return self.inner.streams().append_group(appends).await;
        }
        self.append_personal(appends).await
    }

    async fn find_commands(
        &self,
        command_ids: &[&str],
    ) -> Result<Vec<RecordedCommand>, StoreError> {
        let mut commands = self.inner.streams().find_commands(command_ids).await?;
        for command in &mut commands {
            let events = std::mem::take(&mut command.events);
            command.events = self.open_events(events).await?;
        }
        Ok(commands)
    }
}

#[async_trait]
impl GlobalLog for PersonalStore {
    async fn read_all(
        &self,
        after: i64,
        aggregate: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.log().read_all(after, aggregate, limit).await?;
        self.open_events(events).await
    }

    async fn tail_start(&self, count: u64, aggregate: Option<&str>) -> Result<i64, StoreError> {
        self.inner.log().tail_start(count, aggregate).await
    }

    async fn append_signal(&self) -> Box<dyn AppendSignal> {
        self.inner.log().append_signal().await
    }

    async fn horizon_holder(&self) -> Result<Option<HorizonHolder>, StoreError> {
        self.inner.log().horizon_holder().await
    }
}
