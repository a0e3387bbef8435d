//! Forgetting a data subject, on the [`PersonalStore`]: the two steps of
//! a forget, what a store learns from an erasure it reads, and the
//! snapshot key each forget replaces (decision record 0056).

use super::{KEY_TTL, Known, PersonalStore, lock, personal};
use crate::snapshots::{KeyId, SNAPSHOT_KEY, SnapshotKey};
use eshost_core::erasure::{self, ErasedStream, Erasure, SubjectForgotten};
use eshost_core::{RecordedEvent, StreamId};
use eshost_store::{NewCommand, NewEvent, StoreError};
use std::sync::Arc;

/// Snapshot keys remembered as replaced by a forget: a snapshot sealed
/// under one is neither read nor written.
const RETIRED_KEYS: usize = 64;

/// The metadata field of an erasure event that names the snapshot key the
/// forget replaces (its id in hex): a host that reads the erasure stops
/// using that key at once, before the forget has replaced it.
const RETIRES_SNAPSHOT_KEY: &str = "retiresSnapshotKey";

impl PersonalStore {
    /// The store's snapshot key, if one may be used now: none while the
    /// store still holds a key a forget is replacing.
    pub(super) async fn snapshot_key(&self) -> Result<Option<Arc<SnapshotKey>>, StoreError> {
        let cached = lock(&self.snapshot_key).clone();
        if let Some(key) = cached.filter(|k| k.read_at.elapsed() < KEY_TTL) {
            return Ok(Some(key));
        }
        let key = Arc::new(self.stored_snapshot_key().await?);
        if lock(&self.retired).contains(&key.id) {
            return Ok(None);
        }
        *lock(&self.snapshot_key) = Some(key.clone());
        Ok(Some(key))
    }

    /// The snapshot key the store holds now.
    async fn stored_snapshot_key(&self) -> Result<SnapshotKey, StoreError> {
        let kept = self.inner.subjects().kept_keys().await?;
        let Some((_, key)) = kept.iter().find(|(name, _)| name == SNAPSHOT_KEY) else {
            return Err(personal("the store's snapshot key is missing"));
        };
        SnapshotKey::unwrap(&self.keyring, key).map_err(personal)
    }

    /// Stops using a snapshot key a forget replaces.
    fn retire(&self, id: KeyId) {
        let mut retired = lock(&self.retired);
        if !retired.contains(&id) {
            if retired.len() == RETIRED_KEYS {
                retired.pop_front();
            }
            retired.push_back(id);
        }
        drop(retired);
        let mut current = lock(&self.snapshot_key);
        if current.as_ref().is_some_and(|k| k.id == id) {
            *current = None;
        }
    }

    /// Forgets a subject in two steps, each safe to repeat (decision record
    /// 0056): records the erasure event, then deletes the subject's row,
    /// their appearances and their streams' snapshots in one transaction.
    /// A forget killed between the two finds the row still there and is
    /// finished by running it again; the other order could not be, since
    /// the pseudonym the event names would be gone with the row.
    pub(super) async fn forget(&self, subject: &str) -> Result<Option<Erasure>, StoreError> {
        let lookup = self.lookup.sign(&[subject.as_bytes()]);
        let subjects = self.inner.subjects();
        let Some(row) = subjects.find_subject(&lookup).await? else {
            self.forgotten(None, &lookup);
            return Ok(None);
        };
        let streams = subjects.subject_streams(&row.pseudonym).await?;
        let retiring = self.stored_snapshot_key().await?.id;
        let recorded_now = self
            .record_erasure(&row.pseudonym, &streams, retiring)
            .await?;
        self.retire(retiring);
        let (replacement, wrapped) = SnapshotKey::generate(&self.keyring).map_err(personal)?;
        let replaced = [(SNAPSHOT_KEY.to_owned(), wrapped)];
        let snapshots_deleted = subjects.delete_subject(&row.pseudonym, &replaced).await?;
        *lock(&self.snapshot_key) = Some(Arc::new(replacement));
        self.forgotten(Some(&row.pseudonym), &lookup);
        Ok(Some(Erasure {
            pseudonym: row.pseudonym,
            streams: streams.iter().map(ErasedStream::from).collect(),
            snapshots_deleted,
            recorded_now,
        }))
    }

    /// Appends `SubjectForgotten` to the subject's erasure stream; false if
    /// an earlier run had.
    async fn record_erasure(
        &self,
        pseudonym: &str,
        streams: &[StreamId],
        retiring: KeyId,
    ) -> Result<bool, StoreError> {
        let command_id = erasure::forget_command_id(pseudonym);
        let payload = serde_json::to_string(&SubjectForgotten {
            subject: pseudonym.to_owned(),
            streams: streams.iter().map(ErasedStream::from).collect(),
        })
        .map_err(personal)?;
        let metadata = serde_json::json!({
            "commandId": command_id,
            (eshost_core::event::CORRELATION_ID): command_id,
            (RETIRES_SNAPSHOT_KEY): hex::encode(retiring),
        })
        .to_string();
        let command = NewCommand {
            // The same for every run of one subject's forget, so a rerun
            // is a repeat.
            fingerprint: eshost_core::command::fingerprint(FORGET, pseudonym),
            command_id,
            name: FORGET.to_owned(),
            events: vec![NewEvent {
                name: erasure::SUBJECT_FORGOTTEN.to_owned(),
                payload,
                metadata,
                subject: None,
            }],
        };
        let stream = StreamId::new(erasure::SUBJECTS_AGGREGATE, pseudonym);
        match self
            .inner
            .streams()
            .append(&stream, 0, std::slice::from_ref(&command))
            .await
        {
            Ok(_) => Ok(true),
            // Recorded by an earlier run: the stream is one event long, and
            // that event is this erasure.
            Err(StoreError::Conflict { .. } | StoreError::DuplicateCommand { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes this store read the subject as forgotten from now on.
    fn forgotten(&self, pseudonym: Option<&str>, lookup: &[u8]) {
        lock(&self.lookups).pop(lookup);
        if let Some(pseudonym) = pseudonym {
            lock(&self.subjects).put(pseudonym.to_owned(), Arc::new(Known::Forgotten));
        }
    }

    /// An erasure read (recorded by another host's forget) makes its
    /// subject forgotten here at once, rather than when their cached key
    /// is next read again: a host that follows the log and then drops the
    /// erased streams' states hydrates them again without the subject.
    pub(super) fn learn_erasures(&self, events: &[RecordedEvent]) {
        for event in events {
            if event.aggregate == erasure::SUBJECTS_AGGREGATE
                && event.name == erasure::SUBJECT_FORGOTTEN
            {
                let retires = event.metadata.get(RETIRES_SNAPSHOT_KEY);
                let id = retires.and_then(|id| hex::decode(id.as_str()?).ok());
                if let Some(id) = id.and_then(|id| KeyId::try_from(id).ok()) {
                    self.retire(id);
                }
                let forgotten = |k: &Arc<Known>| matches!(&**k, Known::Subject { pseudonym, .. } if *pseudonym == event.id);
                let mut subjects = lock(&self.subjects);
                if subjects.peek(&event.id).is_some_and(forgotten) {
                    subjects.put(event.id.clone(), Arc::new(Known::Forgotten));
                }
                drop(subjects);
                // Rare, so a scan: their next append resolves a new row.
                let mut lookups = lock(&self.lookups);
                let stale: Vec<Vec<u8>> = lookups
                    .iter()
                    .filter(|(_, k)| forgotten(k))
                    .map(|(lookup, _)| lookup.clone())
                    .collect();
                for lookup in stale {
                    lookups.pop(&lookup);
                }
            }
        }
    }
}

/// The name of a forget's command.
const FORGET: &str = "Forget";
