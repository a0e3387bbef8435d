//! Stage 2, queued mode (the default): inside one process, commands for one
//! stream wait in that stream's queue. One worker task per busy stream owns
//! its hydrated instance, takes every command waiting (up to
//! [`MAX_BATCH`]), decides them one after another against the in-memory
//! state (applying each command's events before deciding the next, up to
//! [`MAX_BATCH_BYTES`] of events), and appends the whole batch at once,
//! each command's events contiguous; batches of other streams ready at the
//! same moment share its transaction (see [`eshost_store::group`]). Each
//! command gets its own answer; a command the guest refuses or fails on
//! fails alone. While a batch is appended, the commands that arrived
//! meanwhile are decided ahead, on the state it leaves; they are appended
//! once it succeeds, and decided again if it fails. Nothing decided ahead
//! is answered before its own append.
//!
//! The unique key still guards every append, so another process writing the
//! same stream is caught: on a conflict the batch's tentative state is thrown
//! away, the instance is rebuilt from the store and the batch decided again
//! (each command's retries counted against `max_retries`). Refusals are
//! answered only after the batch's append succeeded (proof the state they were
//! decided on was current), or, in a batch that appends nothing, after a read
//! that shows no newer events.
//!
//! Each queue is bounded: a command that finds its aggregate's queue full
//! fails at once with [`CommandError::Overloaded`] instead of waiting. A
//! batch is decided by the component loaded when it is decided: after a
//! reload, the next batch runs on a new instance of the new version (so a
//! stream's events switch versions once, at a batch boundary); batches
//! already decided finish on the old one. An aggregate unloaded meanwhile
//! still has its queued commands decided by the version they were accepted
//! with: its queue drains.

use super::admit::Admitted;
use super::guest::{Decided, ToDecide};
use super::{Answer, CommandOutcome, Stages};
use crate::error::{CommandError, StoreError};
use crate::trace;
use eshost_store::{NewCommand, StreamId};
use eshost_wasm::{Hydrated, LoadedComponent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{Span, debug, debug_span, warn};

/// Commands decided and appended together at most.
pub const MAX_BATCH: usize = 512;

/// Bytes of event names and payloads a batch's decisions may reach: a
/// batch stops deciding once past it, and the rest wait for the next one.
/// With the default limits one command adds at most 6.4 MiB (100 events
/// of 64 KiB), so an append stays far below what a database takes in one
/// message (1 GiB for PostgreSQL).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Commands one aggregate's queue holds when no capacity is given.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// How long an idle worker waits before it hands its instance to the cache
/// and stops.
const IDLE: Duration = Duration::from_millis(250);

struct Job {
    admitted: Admitted,
    retries: u32,
    reply: oneshot::Sender<Answer>,
    /// The `queue` span, open until a batch takes the job.
    waiting: Span,
}

impl Job {
    fn answer(self, answer: Answer) {
        // The caller may have given up waiting; that is its business.
        let _ = self.reply.send(answer);
    }
}

/// The live queues, one per stream with a worker.
pub(super) struct Queues {
    senders: Mutex<HashMap<StreamId, mpsc::Sender<Job>>>,
    /// Commands one stream's queue holds.
    capacity: usize,
    /// Commands accepted and not yet taken into a batch, over all streams.
    depth: AtomicUsize,
}

impl Queues {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            senders: Mutex::default(),
            capacity: capacity.max(1),
            depth: AtomicUsize::new(0),
        }
    }

    pub(super) fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Moves a job out of its queue into a worker's batch.
    fn take(&self, mut job: Job, pending: &mut Vec<Job>) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        job.waiting = Span::none();
        pending.push(job);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StreamId, mpsc::Sender<Job>>> {
        // Each critical section is a single map operation; poisoning cannot
        // leave the map half-updated.
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queues a command on its stream and waits for its answer.
pub(super) async fn submit(stages: &Arc<Stages>, admitted: Admitted) -> Answer {
    let stream = admitted.stream.clone();
    let (reply, answer) = oneshot::channel();
    let caller = &admitted.caller;
    let waiting = trace::child_of(caller, || debug_span!(parent: caller, "queue", %stream));
    let job = Job {
        admitted,
        retries: 0,
        reply,
        waiting,
    };
    {
        // Sending under the lock pairs with the worker's exit under the lock:
        // a job is never sent to a worker that has decided to stop.
        let mut senders = stages.queues.lock();
        let unsent = match senders.get(&stream) {
            None => Some(job),
            Some(sender) => match sender.try_send(job) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Closed(job)) => Some(job),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(CommandError::Overloaded {
                        aggregate: stream.aggregate.clone(),
                        id: stream.id.clone(),
                        capacity: stages.queues.capacity,
                    });
                }
            },
        };
        if let Some(job) = unsent {
            if stages.closing.is_cancelled() {
                return Err(CommandError::ShuttingDown);
            }
            let (sender, receiver) = mpsc::channel(stages.queues.capacity);
            // The receiver is alive (it is moved into the worker below) and
            // the channel is empty.
            let _ = sender.try_send(job);
            senders.insert(stream.clone(), sender);
            stages
                .workers
                .spawn(worker(stages.clone(), stream.clone(), receiver));
        }
        stages.queues.depth.fetch_add(1, Ordering::Relaxed);
    }
    answer.await.unwrap_or_else(|_| {
        Err(CommandError::WorkerLost {
            aggregate: stream.aggregate.clone(),
            id: stream.id.clone(),
        })
    })
}

/// Serves one stream until it has been idle for [`IDLE`], or, once the host
/// is shutting down, until its queue is empty.
async fn worker(stages: Arc<Stages>, stream: StreamId, mut receiver: mpsc::Receiver<Job>) {
    let mut instance: Option<Hydrated> = None;
    let mut pending: Vec<Job> = Vec::new();
    loop {
        if pending.is_empty() {
            let idle = tokio::select! {
                job = receiver.recv() => match job {
                    Some(job) => {
                        stages.queues.take(job, &mut pending);
                        false
                    }
                    None => break,
                },
                () = tokio::time::sleep(IDLE) => true,
                () = stages.closing.cancelled() => true,
            };
            if idle {
                let mut senders = stages.queues.lock();
                match receiver.try_recv() {
                    Ok(job) => stages.queues.take(job, &mut pending),
                    Err(_) => {
                        senders.remove(&stream);
                        break;
                    }
                }
            }
        }
        fill(&stages.queues, &mut receiver, &mut pending);
        let batch = std::mem::take(&mut pending);
        let (decided, leftover) = decide(&stages, &stream, &mut instance, batch, false).await;
        pending = leftover;
        let mut ready = decided;
        // Appends one batch after another. While one is appended, the next
        // is decided on the state it leaves: host and database work at the
        // same time instead of taking turns.
        let mut snapshot_from = None;
        let mut last_caller = Span::none();
        while let Some(batch) = ready.take() {
            fill(&stages.queues, &mut receiver, &mut pending);
            let next = std::mem::take(&mut pending);
            let base_version = batch.base_version;
            let (appended, (decided, leftover)) = tokio::join!(
                append(&stages, &stream, batch),
                decide(&stages, &stream, &mut instance, next, true),
            );
            match appended {
                Ok(caller) => {
                    snapshot_from.get_or_insert(base_version);
                    last_caller = caller;
                    ready = decided;
                    pending = leftover;
                }
                Err(mut redo) => {
                    // The instance's state includes the failed batch, and
                    // the next batch was decided on it: both start over.
                    instance = None;
                    let ahead = decided.into_iter().flat_map(|d| d.decided);
                    redo.extend(ahead.map(|(job, _)| job));
                    redo.extend(leftover);
                    pending = redo;
                }
            }
        }
        // Nothing decided ahead: the instance holds exactly what is recorded.
        if let (Some(aggregate), Some(before)) = (instance.take(), snapshot_from) {
            match stages
                .aggregates
                .maybe_snapshot(aggregate, &stream, before, &last_caller)
                .await
            {
                Ok(aggregate) => instance = Some(aggregate),
                Err(e) => warn!(%stream, error = %e, "instance dropped after append"),
            }
        }
    }
    if let Some(aggregate) = instance {
        stages.aggregates.cache.put(stream, aggregate);
    }
}

/// Moves waiting jobs into `pending`, up to [`MAX_BATCH`].
fn fill(queues: &Queues, receiver: &mut mpsc::Receiver<Job>, pending: &mut Vec<Job>) {
    while pending.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => queues.take(job, pending),
            Err(_) => break,
        }
    }
}

/// A batch decided, with events to append.
struct Ready {
    decided: Vec<(Job, Decided)>,
    new_commands: Vec<NewCommand>,
    /// The stream's version the batch was decided on.
    base_version: u64,
}

/// Decides a batch on `instance` (or on an instance hydrated for it).
/// Returns what it decided that has events to append, and the jobs still to
/// run (those behind a command on which the guest failed, repeats of an id
/// in the batch). Leaves in `instance` the state after the batch, not yet
/// recorded: it is dropped if the batch's append fails.
///
/// `ahead`: the batch is decided while the one before it is being
/// appended, on the state that batch leaves. Then an answer that the
/// append cannot guard (a batch with nothing to append, a guest failure)
/// is not given: the whole batch waits, to be decided again once the
/// append before it is settled.
async fn decide(
    stages: &Stages,
    stream: &StreamId,
    instance: &mut Option<Hydrated>,
    jobs: Vec<Job>,
    ahead: bool,
) -> (Option<Ready>, Vec<Job>) {
    let (jobs, mut repeats) = split_repeats(jobs);
    let Some(first) = jobs.first() else {
        return (None, repeats);
    };
    // The version loaded now decides the batch.
    let component = stages
        .admission
        .component(&stream.aggregate)
        .unwrap_or_else(|_unloaded| first.admitted.component.clone());

    // Only an instance hydrated for this batch is known to be current; one
    // of another component version is dropped.
    let usable = |held: &Hydrated| held.component.digest == component.digest && !held.is_lost();
    if ahead && !instance.as_ref().is_some_and(usable) {
        // Only the instance holding the batch before it can decide ahead.
        let mut waiting = jobs;
        waiting.append(&mut repeats);
        return (None, waiting);
    }
    let held = instance.take().filter(usable);
    let checked_out = stages.aggregates.checkout(&component, stream, held).await;
    let (aggregate, current) = match checked_out {
        Ok(checked_out) => checked_out,
        Err(e) => {
            for job in jobs {
                job.answer(Err(e.clone()));
            }
            return (None, repeats);
        }
    };
    let base_version = aggregate.version;

    // Decide one after another, each against the state the previous left.
    let commands = jobs
        .iter()
        .map(|job| ToDecide {
            command: job.admitted.command.clone(),
            payload: job.admitted.payload.clone(),
            caller: job.admitted.caller.clone(),
        })
        .collect();
    let (aggregate, decision) = stages
        .aggregates
        .decide_batch(aggregate, commands, MAX_BATCH_BYTES)
        .await;
    let new_commands = to_new_commands(&jobs, &decision.decided, &component);
    if ahead && (decision.failure.is_some() || new_commands.is_empty()) {
        // Refusals and failures alike depend on the batch before: it may
        // yet fail. Nothing was applied that is not decided again.
        *instance = aggregate;
        let mut waiting = jobs;
        waiting.append(&mut repeats);
        return (None, waiting);
    }
    let mut jobs = jobs.into_iter();
    let decided: Vec<(Job, Decided)> = jobs.by_ref().zip(decision.decided).collect();
    if let Some(failure) = decision.failure {
        // The instance failed on this command: it fails alone.
        if let Some(job) = jobs.next() {
            job.answer(Err(failure));
        }
    }
    let mut leftover: Vec<Job> = jobs.collect();
    leftover.append(&mut repeats);

    if new_commands.is_empty() {
        let (kept, leftover) =
            answer_unrecorded(stages, stream, aggregate, current, decided, leftover).await;
        *instance = kept;
        return (None, leftover);
    }
    *instance = aggregate;
    let ready = Ready {
        decided,
        new_commands,
        base_version,
    };
    (Some(ready), leftover)
}

/// What a batch appends: the commands that decided events, under their
/// ids, with the component that decided them named in the metadata.
fn to_new_commands(
    jobs: &[Job],
    decided: &[Decided],
    component: &LoadedComponent,
) -> Vec<NewCommand> {
    jobs.iter()
        .zip(decided)
        .filter_map(|(job, result)| match result {
            Ok(events) if !events.is_empty() => {
                Some(job.admitted.to_new_command(component, events))
            }
            _ => None,
        })
        .collect()
}

/// The batch, and the repeats among it: a command id twice in one append
/// would collide with itself, so a repeat waits for the next batch, where
/// it finds the first one recorded.
fn split_repeats(jobs: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    let mut ids = std::collections::HashSet::new();
    jobs.into_iter()
        .partition(|job| ids.insert(job.admitted.command_id.as_str().to_string()))
}

/// Answers a batch that decided to record nothing (refusals, no events).
/// Nothing appended, nothing guards these answers: they stand only if no
/// newer events exist. Otherwise they go back to be decided again, fresh.
/// Returns the instance to keep and the jobs still waiting.
async fn answer_unrecorded(
    stages: &Stages,
    stream: &StreamId,
    aggregate: Option<Hydrated>,
    current: bool,
    decided: Vec<(Job, Decided)>,
    mut leftover: Vec<Job>,
) -> (Option<Hydrated>, Vec<Job>) {
    let mut kept = aggregate;
    if !current {
        let stale = match kept.take() {
            None => true,
            Some(aggregate) => match stages.aggregates.catch_up(aggregate, stream).await {
                Ok((aggregate, 0)) => {
                    kept = Some(aggregate);
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    for (job, _) in decided {
                        job.answer(Err(e.clone()));
                    }
                    return (None, leftover);
                }
            },
        };
        if stale {
            let mut redo: Vec<Job> = decided.into_iter().map(|(job, _)| job).collect();
            redo.append(&mut leftover);
            return (None, redo);
        }
    }
    answer_batch(stages, decided, Vec::new()).await;
    (kept, leftover)
}

/// Appends a decided batch and answers its commands. `Ok` holds the span
/// its last command was submitted under (a snapshot after the batch is
/// traced there). `Err` means the batch's state is not what was recorded
/// (the instance that decided it must go), with the jobs to decide again:
/// after a conflict, or the commands that are not repeats after a
/// duplicate id.
async fn append(stages: &Stages, stream: &StreamId, batch: Ready) -> Result<Span, Vec<Job>> {
    let Ready {
        decided,
        new_commands,
        base_version,
    } = batch;
    stages.metrics.appends.inc();
    stages
        .metrics
        .batch_commands
        .observe(new_commands.len() as f64);
    let deadline = tokio::time::Instant::now() + stages.records.retry.command_deadline;
    // The commands that record events: a refusal in the batch waits for
    // the append, but is not carried by it.
    let callers = decided
        .iter()
        .filter(|(_, decided)| matches!(decided, Ok(events) if !events.is_empty()))
        .map(|(job, _)| &job.admitted.caller);
    match stages
        .records
        .append_settled(stream, base_version, new_commands, deadline, callers)
        .await
    {
        Ok(recorded) => {
            let last_caller = decided
                .last()
                .map_or_else(Span::none, |(job, _)| job.admitted.caller.clone());
            answer_batch(stages, decided, recorded).await;
            Ok(last_caller)
        }
        Err(StoreError::Conflict { .. }) => {
            // Another process appended first. The tentative state is wrong:
            // drop it, and decide the batch again on a fresh instance.
            stages.metrics.conflicts.inc();
            let mut redo = Vec::new();
            let mut round = 0;
            for (mut job, _) in decided {
                if job.retries >= stages.records.retry.max_retries {
                    let retries = job.retries;
                    let error = job.admitted.exhausted(retries);
                    job.answer(Err(error));
                } else {
                    job.retries += 1;
                    round = round.max(job.retries);
                    redo.push(job);
                }
            }
            let delay = stages.records.retry.backoff(round.max(1));
            debug!(%stream, batch = redo.len(), ?delay, "conflict; deciding the batch again");
            tokio::time::sleep(delay).await;
            Err(redo)
        }
        Err(error @ StoreError::DuplicateCommand { .. }) => {
            // Some commands here are repeats. They get their recorded
            // outcomes; the tentative state is wrong, so the rest are decided
            // again on a fresh instance.
            let admitted: Vec<&Admitted> = decided.iter().map(|(job, _)| &job.admitted).collect();
            let mut recorded = match stages.records.recorded_answers(&admitted).await {
                Ok(recorded) if !recorded.is_empty() => recorded,
                // Nothing found to explain it: answer rather than loop.
                Ok(_) => return Err(answer_all(decided, Err(error.into()))),
                Err(e) => return Err(answer_all(decided, Err(e.into()))),
            };
            let mut redo = Vec::new();
            for (job, _) in decided {
                match recorded.remove(job.admitted.command_id.as_str()) {
                    Some(answer) => job.answer(answer),
                    None => redo.push(job),
                }
            }
            Err(redo)
        }
        Err(other) => Err(answer_all(decided, Err(other.into()))),
    }
}

/// Answers every decided job with the same failure; none is left to run.
fn answer_all(decided: Vec<(Job, Decided)>, answer: Answer) -> Vec<Job> {
    for (job, _) in decided {
        job.answer(answer.clone());
    }
    Vec::new()
}

/// Answers a batch whose append (of `recorded`, in the batch's order)
/// succeeded, or that appended nothing; a repeat among the commands that
/// recorded nothing gets its recorded outcome.
async fn answer_batch(
    stages: &Stages,
    decided: Vec<(Job, Decided)>,
    recorded: Vec<eshost_store::RecordedEvent>,
) {
    let mut recorded = recorded.into_iter();
    let fresh: Vec<(&Admitted, Answer)> = decided
        .iter()
        .map(|(job, result)| {
            let answer = match result {
                Ok(events) => Ok(CommandOutcome {
                    command_id: job.admitted.command_id.to_string(),
                    events: recorded.by_ref().take(events.len()).collect(),
                    retries: job.retries,
                    replayed: false,
                }),
                Err(refusal) => Err(job.admitted.refused(refusal.clone())),
            };
            (&job.admitted, answer)
        })
        .collect();
    let answers = stages.records.unless_recorded(fresh).await;
    for ((job, _), answer) in decided.into_iter().zip(answers) {
        job.answer(answer);
    }
}
