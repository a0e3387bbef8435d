//! [`PersonalStore`]: an [`EventStore`] that encrypts declared personal
//! data as it appends and decrypts every event it reads. The streams and
//! the global log are its own; the other roles are the inner store's.
//! Snapshots of declaring aggregates are sealed; forgetting a subject is
//! in [`forget`].

use crate::declare::{Declarations, PersonalEvent};
use crate::keys::{DataKey, KeyError, Keyring, LookupKey, new_key, random};
use crate::payload::{self, Declared, Holder, PayloadError};
use crate::snapshots::{KeyId, SNAPSHOT_KEY, SnapshotKey, sealed_parts};
use async_trait::async_trait;
use eshost_core::erasure::Erasure;
use eshost_core::{JsonText, RecordedEvent, Snapshot, StreamId};
use eshost_store::subjects::{Appearance, NewSubjects, SubjectKey, WrappedKey};
use eshost_store::{
    AppendOutcome, AppendSignal, Catalog, Checkpoints, Deployments, EventStore, GlobalLog,
    HorizonHolder, Locks, NewCommand, NewEvent, Reactions, RecordedCommand, StoreError,
    StreamAppend, Streams, Subjects, ViewStore,
};
use lru::LruCache;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod forget;

/// How long a subject's key, once read, is used without reading its row
/// again: a forget on another host reaches this one's reads and writes
/// within this time.
pub const KEY_TTL: Duration = Duration::from_secs(5);

/// Subjects whose keys are kept unwrapped, at most (about 600 bytes each).
const CACHED_SUBJECTS: usize = 16_384;

/// The name of the store's lookup key among its kept keys.
const LOOKUP_KEY: &str = "lookup";

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
    lookup: LookupKey,
    declarations: Declarations,
    /// By pseudonym.
    subjects: Mutex<LruCache<String, Arc<Known>>>,
    /// By lookup (the keyed hash of the subject's id).
    lookups: Mutex<LruCache<Vec<u8>, Arc<Known>>>,
    /// (pseudonym, stream) pairs recorded lately.
    appearances: Mutex<LruCache<(String, StreamId), ()>>,
    /// The store's snapshot key as last read; read again after
    /// [`KEY_TTL`], and at once after an erasure.
    snapshot_key: Mutex<Option<Arc<SnapshotKey>>>,
    /// Snapshot keys a forget replaced, newest last.
    retired: Mutex<VecDeque<KeyId>>,
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
    /// Wraps `inner`. Reads the store's lookup key (stored, wrapped by
    /// the master key, by the first host that opens it): fails if the
    /// configured master keys do not open it.
    pub async fn open(
        inner: Arc<dyn EventStore>,
        keyring: Keyring,
        declarations: Declarations,
    ) -> Result<Self, StoreError> {
        let candidate = WrappedKey {
            wrapped_key: keyring
                .wrap(&new_key().map_err(personal)?, LOOKUP_KEY.as_bytes())
                .map_err(personal)?,
            master_key_id: keyring.current_id().to_owned(),
        };
        let kept = inner.subjects().keep_key(LOOKUP_KEY, &candidate).await?;
        let bytes = keyring
            .unwrap(
                &kept.wrapped_key,
                &kept.master_key_id,
                LOOKUP_KEY.as_bytes(),
                "the store's lookup key",
            )
            .map_err(personal)?;
        let (fresh, wrapped) = SnapshotKey::generate(&keyring).map_err(personal)?;
        let kept = inner.subjects().keep_key(SNAPSHOT_KEY, &wrapped).await?;
        let snapshot_key = match kept == wrapped {
            true => fresh,
            false => SnapshotKey::unwrap(&keyring, &kept).map_err(personal)?,
        };
        Ok(Self {
            inner,
            keyring,
            lookup: LookupKey::new(&bytes),
            declarations,
            subjects: cache(),
            lookups: cache(),
            appearances: cache(),
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

    /// A new subject's row: a random pseudonym and key.
    fn candidate(&self, subject: &str, lookup: Vec<u8>) -> Result<(SubjectKey, DataKey), KeyError> {
        let mut id = [0u8; 16];
        random(&mut id)?;
        let pseudonym = format!("psn_{}", hex::encode(id));
        let bytes = new_key()?;
        let key = DataKey::new(&bytes);
        let row = SubjectKey {
            wrapped_key: self.keyring.wrap(&bytes, pseudonym.as_bytes())?,
            sealed_subject: key.seal(subject.as_bytes(), pseudonym.as_bytes())?,
            master_key_id: self.keyring.current_id().to_owned(),
            pseudonym,
            lookup,
        };
        Ok((row, key))
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

    /// Each subject's key, by id: from the cache, or a new candidate's,
    /// whose row the append stores (see [`Plan`]). Reads nothing.
    fn plan(&self, wanted: &[(String, &StreamId)]) -> Result<Plan, StoreError> {
        let mut plan = Plan::default();
        for (subject, _) in wanted {
            if plan.keys.contains_key(subject) {
                continue;
            }
            let lookup = self.lookup.lookup(subject);
            let cached = lock(&self.lookups).get(&lookup).cloned();
            let known = match cached.filter(|k| k.fresh()) {
                Some(known) => known,
                None => {
                    let (row, key) = self.candidate(subject, lookup).map_err(personal)?;
                    let known = Arc::new(Known::Subject {
                        pseudonym: row.pseudonym.clone(),
                        subject: subject.clone(),
                        key,
                        read_at: Instant::now(),
                    });
                    plan.candidates.push((row, known.clone()));
                    known
                }
            };
            plan.keys.insert(subject.clone(), known);
        }
        let recorded = lock(&self.appearances);
        for (subject, stream) in wanted {
            let Some(Known::Subject { pseudonym, .. }) = plan.keys.get(subject).map(|k| &**k)
            else {
                continue;
            };
            let pair = (pseudonym.clone(), (*stream).clone());
            if !recorded.contains(&pair) && !plan.appearances.contains(&pair) {
                plan.appearances.push(pair);
            }
        }
        Ok(plan)
    }

    /// The plan's rows stored on their own, as another writer's row for
    /// the same subject is met: each candidate's stored row (theirs, or
    /// ours if theirs was forgotten since) is cached and planned with.
    async fn store_plan(&self, plan: Plan) -> Result<Plan, StoreError> {
        let (rows, appearances) = plan.to_store();
        let stored = self
            .inner
            .subjects()
            .resolve_subjects(&rows, &appearances)
            .await?;
        let mut keys = plan.keys;
        for (row, ours) in plan.candidates {
            let known = match stored.iter().find(|s| s.lookup == row.lookup) {
                Some(s) if s.pseudonym == row.pseudonym => ours,
                Some(s) => Arc::new(self.unwrap_row(s).map_err(personal)?),
                None => {
                    return Err(personal(format!(
                        "no row came back for a subject of {}",
                        row.pseudonym
                    )));
                }
            };
            if let Known::Subject {
                pseudonym, subject, ..
            } = &*known
            {
                lock(&self.subjects).put(pseudonym.clone(), known.clone());
                keys.insert(subject.clone(), known.clone());
            }
            lock(&self.lookups).put(row.lookup, known);
        }
        // The appearances were stored under the winners' pseudonyms; the
        // next append records any that are still missing.
        Ok(Plan {
            keys,
            ..Plan::default()
        })
    }

    /// Caches what an append stored: the appearances of the streams whose
    /// appends were recorded, and the candidates that appear in them.
    fn remember(&self, plan: Plan, appends: &[StreamAppend<'_>], outcomes: &[AppendOutcome]) {
        let recorded: Vec<&StreamId> = appends
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(append, _)| append.stream)
            .collect();
        let mut stored: Vec<&str> = Vec::new();
        {
            let mut appearances = lock(&self.appearances);
            for pair in &plan.appearances {
                if recorded.contains(&&pair.1) {
                    stored.push(&pair.0);
                    appearances.put(pair.clone(), ());
                }
            }
        }
        for (row, known) in plan.candidates {
            if stored.contains(&row.pseudonym.as_str()) {
                lock(&self.subjects).put(row.pseudonym, known.clone());
                lock(&self.lookups).put(row.lookup, known);
            }
        }
    }

    /// Each append's declared personal data, parsed: per append, per
    /// command, per event. With the subjects named and where.
    fn parse_group<'a>(
        &self,
        appends: &[StreamAppend<'a>],
    ) -> Result<(ParsedGroup, Wanted<'a>), StoreError> {
        let mut pending: ParsedGroup = Vec::with_capacity(appends.len());
        let mut wanted = Vec::new();
        for append in appends {
            let mut commands = Vec::with_capacity(append.commands.len());
            for command in append.commands {
                let mut events = Vec::with_capacity(command.events.len());
                for event in &command.events {
                    let declared = self.declarations.of(&append.stream.aggregate, &event.name);
                    let parsed = match declared {
                        Some(declared) => {
                            let parsed =
                                Declared::parse(&event.payload, &declared).map_err(personal)?;
                            wanted.push((parsed.subject.clone(), append.stream));
                            Some(Pending { declared, parsed })
                        }
                        None => None,
                    };
                    events.push(parsed);
                }
                commands.push(events);
            }
            pending.push(commands);
        }
        Ok((pending, wanted))
    }

    /// The group with its declared data sealed under the plan's keys,
    /// appended with the plan's new rows; each recorded event carries its
    /// plaintext back, with the metadata as stored.
    async fn append_sealed(
        &self,
        appends: &[StreamAppend<'_>],
        pending: ParsedGroup,
        plan: &Plan,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut sealed: Vec<Vec<NewCommand>> = Vec::with_capacity(appends.len());
        for (append, commands) in appends.iter().zip(pending) {
            let mut stored = Vec::with_capacity(append.commands.len());
            for (command, events) in append.commands.iter().zip(commands) {
                let mut new_events = Vec::with_capacity(command.events.len());
                for (event, pending) in command.events.iter().zip(events) {
                    let Some(Pending { declared, parsed }) = pending else {
                        new_events.push(event.clone());
                        continue;
                    };
                    let Some(Known::Subject { pseudonym, key, .. }) =
                        plan.keys.get(&parsed.subject).map(|k| &**k)
                    else {
                        return Err(personal("a subject's key was not resolved"));
                    };
                    let (payload, marker) = parsed
                        .seal(&declared, pseudonym, key)
                        .map_err(|e: PayloadError| personal(e))?;
                    new_events.push(NewEvent {
                        name: event.name.clone(),
                        payload,
                        metadata: payload::mark(&event.metadata, &marker).map_err(personal)?,
                    });
                }
                stored.push(NewCommand {
                    events: new_events,
                    ..command.clone()
                });
            }
            sealed.push(stored);
        }
        let sealed_appends: Vec<StreamAppend<'_>> = appends
            .iter()
            .zip(&sealed)
            .map(|(append, commands)| StreamAppend {
                commands,
                ..*append
            })
            .collect();
        let (rows, appearances) = plan.to_store();
        let subjects = NewSubjects {
            candidates: &rows,
            appearances: &appearances,
        };
        let streams = self.inner.streams();
        let mut outcomes = match subjects.is_empty() {
            true => streams.append_group(&sealed_appends).await?,
            false => {
                streams
                    .append_group_with_subjects(&sealed_appends, &subjects)
                    .await?
            }
        };
        for (outcome, append) in outcomes.iter_mut().zip(appends) {
            let Ok(recorded) = outcome else { continue };
            let written = append.commands.iter().flat_map(|c| &c.events);
            for (event, original) in recorded.iter_mut().zip(written) {
                event.payload = JsonText::new(original.payload.clone()).map_err(personal)?;
            }
        }
        Ok(outcomes)
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
        let mut missing: Vec<&str> = Vec::new();
        {
            let mut cached = lock(&self.subjects);
            for marker in markers.iter().flatten() {
                let pseudonym = marker.subject.as_str();
                if known.contains_key(pseudonym) || missing.contains(&pseudonym) {
                    continue;
                }
                match cached.get(pseudonym).filter(|k| k.fresh()) {
                    Some(k) => {
                        known.insert(pseudonym, k.clone());
                    }
                    None => missing.push(pseudonym),
                }
            }
        }
        if !missing.is_empty() {
            let rows = self.inner.subjects().subject_keys(&missing).await?;
            let mut cached = lock(&self.subjects);
            for pseudonym in missing {
                let entry = match rows.iter().find(|r| r.pseudonym == pseudonym) {
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

/// An event's declared personal data, parsed at append.
struct Pending {
    declared: Arc<PersonalEvent>,
    parsed: Declared,
}

/// A group's [`Pending`] data: per append, per command, per event.
type ParsedGroup = Vec<Vec<Vec<Option<Pending>>>>;

/// The subjects a group names, each with the stream it appears in.
type Wanted<'a> = Vec<(String, &'a StreamId)>;

/// The subjects an append group names: each one's key by id, and what the
/// append stores with its events (new subjects' rows, each with its key,
/// and the (pseudonym, stream) appearances not recorded lately).
#[derive(Default)]
struct Plan {
    keys: HashMap<String, Arc<Known>>,
    candidates: Vec<(SubjectKey, Arc<Known>)>,
    appearances: Vec<(String, StreamId)>,
}

impl Plan {
    /// The new rows and the appearances, as the store takes them.
    fn to_store(&self) -> (Vec<SubjectKey>, Vec<Appearance<'_>>) {
        let rows = self.candidates.iter().map(|c| c.0.clone()).collect();
        let appearances = self
            .appearances
            .iter()
            .map(|(pseudonym, stream)| Appearance { pseudonym, stream })
            .collect();
        (rows, appearances)
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
        let (pending, wanted) = self.parse_group(appends)?;
        if wanted.is_empty() {
            return self.inner.streams().append_group(appends).await;
        }
        let plan = self.plan(&wanted)?;
        match self.append_sealed(appends, pending, &plan).await {
            Ok(outcomes) => {
                self.remember(plan, appends, &outcomes);
                Ok(outcomes)
            }
            // Another writer stored a row for one of these subjects first
            // (rare: both met them new at once). Nothing was written: store
            // the rows on their own, which tells whose won, and append again.
            Err(StoreError::SubjectTaken) => {
                let plan = self.store_plan(plan).await?;
                let (pending, _) = self.parse_group(appends)?;
                self.append_sealed(appends, pending, &plan).await
            }
            Err(other) => Err(other),
        }
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
