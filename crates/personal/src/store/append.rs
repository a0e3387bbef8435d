//! Appending on the [`PersonalStore`]: each event's declared data sealed
//! under its subject's key, and new subjects' rows stored in the append's
//! own transaction (decision record 0056). A subject met new by two hosts
//! at once is settled by storing the rows on their own and appending again.

use super::{Known, PersonalStore, lock, personal};
use crate::declare::PersonalEvent;
use crate::keys::{DataKey, KeyError, new_key, random};
use crate::payload::{self, Declared, PayloadError};
use eshost_core::JsonText;
use eshost_store::subjects::{NewSubjects, SubjectKey};
use eshost_store::{AppendOutcome, NewCommand, NewEvent, StoreError, StreamAppend};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// An event's declared personal data, parsed at append.
struct Pending {
    declared: Arc<PersonalEvent>,
    parsed: Declared,
}

/// A group's [`Pending`] data: per append, per command, per event.
type ParsedGroup = Vec<Vec<Vec<Option<Pending>>>>;

/// The subjects an append group names: each one's key by id, and the new
/// subjects' rows the append stores with its events, each with its key.
#[derive(Default)]
struct Plan {
    keys: HashMap<String, Arc<Known>>,
    candidates: Vec<(SubjectKey, Arc<Known>)>,
}

impl Plan {
    /// The new rows, as the store takes them.
    fn rows(&self) -> Vec<SubjectKey> {
        self.candidates.iter().map(|c| c.0.clone()).collect()
    }
}

impl PersonalStore {
    /// Appends a group whose events may hold declared personal data.
    pub(super) async fn append_personal(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let (pending, subjects) = self.parse_group(appends)?;
        if subjects.is_empty() {
            return self.inner.streams().append_group(appends).await;
        }
        let plan = self.plan(&subjects).await?;
        match self.append_sealed(appends, pending, &plan).await {
            Ok(outcomes) => {
                if outcomes.iter().any(Result::is_ok) {
                    // The group committed, and its new rows with it.
                    self.remember(plan);
                }
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

    /// A new subject's row: a new pseudonym and a random key. The
    /// pseudonym's first 48 bits are the time in milliseconds, the other
    /// 80 random: the keys on it (the subjects' and the events' index)
    /// grow at their right edge rather than at random leaves: the personal
    /// bench went from 66% to 77% of plain's rate (decision record 0056).
    /// The time says no more than the event's own `created_at`.
    fn candidate(&self, subject: &str, lookup: Vec<u8>) -> Result<(SubjectKey, Known), KeyError> {
        let mut id = [0u8; 16];
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        id[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        random(&mut id[6..])?;
        let pseudonym = format!("psn_{}", hex::encode(id));
        let bytes = new_key()?;
        let key = DataKey::new(&bytes);
        let row = SubjectKey {
            wrapped_key: self.keyring.wrap(&bytes, pseudonym.as_bytes())?,
            sealed_subject: key.seal(subject.as_bytes(), pseudonym.as_bytes())?,
            master_key_id: self.keyring.current_id().to_owned(),
            pseudonym: pseudonym.clone(),
            lookup,
        };
        let known = Known::Subject {
            pseudonym,
            subject: subject.to_owned(),
            key,
            read_at: Instant::now(),
        };
        Ok((row, known))
    }

    /// Each subject's key, by id: from the cache; read again, in one query
    /// for all of them, if cached longer than [`KEY_TTL`](super::KEY_TTL)
    /// (else a returning subject would get a candidate, and the group would
    /// fail on their stored row, every 5 s); or a new candidate's, whose
    /// row the append stores.
    async fn plan(&self, subjects: &HashSet<String>) -> Result<Plan, StoreError> {
        let mut plan = Plan::default();
        // (subject, lookup, pseudonym) of each key cached too long.
        let mut stale: Vec<(&String, Vec<u8>, String)> = Vec::new();
        for subject in subjects {
            let lookup = self.lookup.sign(&[subject.as_bytes()]);
            let cached = lock(&self.lookups).get(&lookup).cloned();
            match cached {
                Some(known) if known.fresh() => {
                    plan.keys.insert(subject.clone(), known);
                }
                Some(known) => match &*known {
                    Known::Subject { pseudonym, .. } => {
                        stale.push((subject, lookup, pseudonym.clone()));
                    }
                    Known::Forgotten => self.plan_candidate(&mut plan, subject, lookup)?,
                },
                None => self.plan_candidate(&mut plan, subject, lookup)?,
            }
        }
        if stale.is_empty() {
            return Ok(plan);
        }
        let pseudonyms: Vec<&str> = stale.iter().map(|(.., p)| p.as_str()).collect();
        let rows = self.inner.subjects().subject_keys(&pseudonyms).await?;
        let rows: HashMap<&str, &SubjectKey> =
            rows.iter().map(|r| (r.pseudonym.as_str(), r)).collect();
        for (subject, lookup, pseudonym) in stale {
            let Some(row) = rows.get(pseudonym.as_str()) else {
                // Forgotten since, on another host: new again.
                self.plan_candidate(&mut plan, subject, lookup)?;
                continue;
            };
            let known = Arc::new(self.unwrap_row(row).map_err(personal)?);
            lock(&self.subjects).put(pseudonym, known.clone());
            lock(&self.lookups).put(lookup, known.clone());
            plan.keys.insert(subject.clone(), known);
        }
        Ok(plan)
    }

    /// Plans a new candidate for `subject`.
    fn plan_candidate(
        &self,
        plan: &mut Plan,
        subject: &str,
        lookup: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (row, known) = self.candidate(subject, lookup).map_err(personal)?;
        let known = Arc::new(known);
        plan.candidates.push((row, known.clone()));
        plan.keys.insert(subject.to_owned(), known);
        Ok(())
    }

    /// The plan's rows stored on their own, as another writer's row for
    /// the same subject is met: each candidate's stored row (theirs, or
    /// ours if theirs was forgotten since) is cached and planned with.
    async fn store_plan(&self, plan: Plan) -> Result<Plan, StoreError> {
        let stored = self.inner.subjects().resolve_subjects(&plan.rows()).await?;
        let stored: HashMap<&[u8], &SubjectKey> =
            stored.iter().map(|s| (s.lookup.as_slice(), s)).collect();
        let mut keys = plan.keys;
        for (row, ours) in plan.candidates {
            let known = match stored.get(row.lookup.as_slice()) {
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
        Ok(Plan {
            keys,
            candidates: Vec::new(),
        })
    }

    /// Caches the new subjects a committed append stored.
    fn remember(&self, plan: Plan) {
        for (row, known) in plan.candidates {
            lock(&self.subjects).put(row.pseudonym, known.clone());
            lock(&self.lookups).put(row.lookup, known);
        }
    }

    /// Each append's declared personal data, parsed: per append, per
    /// command, per event. With the subjects the group names.
    fn parse_group(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<(ParsedGroup, HashSet<String>), StoreError> {
        let mut pending: ParsedGroup = Vec::with_capacity(appends.len());
        let mut subjects = HashSet::new();
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
                            subjects.insert(parsed.subject.clone());
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
        Ok((pending, subjects))
    }

    /// The group with its declared data sealed under the plan's keys, each
    /// sealed event naming its subject's pseudonym, appended with the
    /// plan's new rows; each recorded event carries its plaintext back,
    /// with the metadata as stored.
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
                        subject: Some(pseudonym.clone()),
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
        let rows = plan.rows();
        let streams = self.inner.streams();
        let mut outcomes = match rows.is_empty() {
            true => streams.append_group(&sealed_appends).await?,
            false => {
                let subjects = NewSubjects { candidates: &rows };
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
}
