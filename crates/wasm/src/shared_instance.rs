//! Guest instances shared by many hydrated aggregates of one component.
//!
//! The contract's `state` is a resource, so one instance of a component can
//! hold the states of many aggregates. A guest built from JavaScript or
//! Python costs about a megabyte of memory per instance and a few hundred
//! bytes per state, so sharing is what keeps thousands of hydrated
//! aggregates affordable. [`InstanceSet`] places each new state in an open
//! instance (one holding fewer than [`Limits::aggregates_per_instance`]
//! states and using less than half its memory limit, the other half being
//! room for its states to grow), else in a new instance.
//!
//! Every call locks its instance, so the aggregates sharing one take turns;
//! a slow call delays at most the others in that instance. The dispatcher
//! waits for an instance's [`turn`](SharedInstance::turn) asynchronously
//! before it takes a permit of the guest pool, so a call waiting for its
//! turn holds no permit. A trap poisons
//! the whole instance: wasmtime will not enter it again, and its memory may
//! hold anything. The instance is then *lost*: its store is dropped at once,
//! and every aggregate in it fails its next call with
//! [`GuestError::InstanceLost`] before reaching the guest. The dispatcher
//! rebuilds such an aggregate from the event store, never from the poisoned
//! instance.
//!
//! Dropping an aggregate calls no guest code (drops happen on any thread,
//! async ones included): its state waits in a list, and the instance's next
//! call frees it, on that call's thread and under its budget.
//!
//! [`Limits::aggregates_per_instance`]: super::Limits::aggregates_per_instance

use super::LoadedComponent;
use super::contract::Guest;
use super::sandbox::{self, GuestContext};
use crate::error::GuestError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// The instances of one component and where the next state goes.
#[derive(Default)]
pub(crate) struct InstanceSet {
    /// Instances that may take more states (a full one stays listed, as its
    /// states may go; a lost or half-full-of-memory one is removed).
    open: Mutex<Vec<Arc<SharedInstance>>>,
    /// Instances alive (listed or not), for metrics and tests.
    alive: Arc<AtomicUsize>,
    /// Instances lost to a trap since the component was loaded.
    lost: Arc<AtomicUsize>,
}

impl InstanceSet {
    /// An instance with a place reserved for one more state: an open one
    /// with room, else a new one. The caller fills the place with
    /// [`SharedInstance::call`] and gives it back with
    /// [`SharedInstance::release`] or [`SharedInstance::vacate`].
    pub(crate) fn place(
        &self,
        component: &LoadedComponent,
    ) -> Result<Arc<SharedInstance>, GuestError> {
        let per_instance = component.limits.aggregates_per_instance.max(1);
        let memory_room = component.limits.memory_bytes / 2;
        {
            let mut open = lock(&self.open);
            // One empty instance is kept ready; more would only hold memory.
            let mut kept_empty = false;
            open.retain(|instance| {
                let usable = !instance.is_lost() && instance.memory() < memory_room;
                let empty = instance.tenants.load(Ordering::Acquire) == 0;
                let keep = usable && (!empty || !kept_empty);
                kept_empty |= keep && empty;
                keep
            });
            let with_room = open
                .iter()
                .find(|instance| instance.tenants.load(Ordering::Acquire) < per_instance);
            if let Some(instance) = with_room {
                instance.tenants.fetch_add(1, Ordering::AcqRel);
                return Ok(instance.clone());
            }
        }
        // Started outside the lock: instantiating a big guest takes a while.
        let fresh = Arc::new(SharedInstance::start(component, self)?);
        fresh.tenants.fetch_add(1, Ordering::AcqRel);
        if per_instance > 1 {
            lock(&self.open).push(fresh.clone());
        }
        Ok(fresh)
    }

    /// Instances of this component alive now.
    pub(crate) fn alive(&self) -> usize {
        self.alive.load(Ordering::Relaxed)
    }

    /// Instances of this component lost to a trap so far.
    pub(crate) fn lost(&self) -> usize {
        self.lost.load(Ordering::Relaxed)
    }
}

/// One instance of a component and the states it holds.
pub(crate) struct SharedInstance {
    /// `None` once the instance is lost.
    live: Mutex<Option<Live>>,
    /// States of dropped aggregates, freed by the next call.
    released: Mutex<Vec<ResourceAny>>,
    /// Places taken: states held plus places reserved for states to come.
    tenants: AtomicUsize,
    /// Bytes of linear memory after the last call.
    memory: AtomicUsize,
    /// States the instance may hold.
    places: usize,
    is_lost: AtomicBool,
    /// One permit: whoever holds it is next to call (see the module doc).
    turn: Arc<tokio::sync::Semaphore>,
    alive: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

struct Live {
    store: Store<GuestContext>,
    guest: Guest,
}

impl SharedInstance {
    fn start(component: &LoadedComponent, set: &InstanceSet) -> Result<Self, GuestError> {
        let limits = &component.limits;
        let mut store = sandbox::new_store(&component.engine, component.tag.clone(), limits);
        sandbox::arm(&mut store, limits);
        let guest = component
            .pre
            .instantiate(&mut store)
            .map_err(|e| sandbox::classify(store.data_mut(), limits, "instantiate", e))?;
        set.alive.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            memory: AtomicUsize::new(store.data().memory_used()),
            live: Mutex::new(Some(Live { store, guest })),
            released: Mutex::default(),
            tenants: AtomicUsize::new(0),
            places: limits.aggregates_per_instance.max(1),
            is_lost: AtomicBool::new(false),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
            alive: set.alive.clone(),
            lost: set.lost.clone(),
        })
    }

    /// Runs `call` (named `name` in errors) in the instance under a fresh
    /// budget. A failure in the guest loses the instance for every state
    /// it holds; a lost instance fails every call with
    /// [`GuestError::InstanceLost`] without running it.
    pub(crate) fn call<T>(
        &self,
        component: &LoadedComponent,
        name: &'static str,
        call: impl FnOnce(&mut Store<GuestContext>, &Guest) -> wasmtime::Result<T>,
    ) -> Result<T, GuestError> {
        let limits = &component.limits;
        let mut live = match self.live.try_lock() {
            Ok(live) => live,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // A placement (which takes no turn) is calling: wait off
                // the async worker, if this call runs on one.
                super::pool::leave_async_worker();
                lock(&self.live)
            }
        };
        let Some(Live { store, guest }) = live.as_mut() else {
            return Err(GuestError::InstanceLost {
                aggregate: component.name.clone(),
            });
        };
        let released = std::mem::take(&mut *lock(&self.released));
        for state in released {
            sandbox::arm(store, limits);
            if let Err(e) = state.resource_drop(&mut *store) {
                return Err(self.lose(&mut live, component, "state drop", e));
            }
        }
        sandbox::arm(store, limits);
        match call(store, guest) {
            Ok(value) => {
                self.memory
                    .store(store.data().memory_used(), Ordering::Relaxed);
                if let sandbox::Budget::Fuel(budget) = limits.budget {
                    // The host's span for this call (a command's `decide`)
                    // says what it cost; a span without the field ignores it.
                    let left = store.get_fuel().unwrap_or(budget);
                    tracing::Span::current().record("fuel", budget.saturating_sub(left));
                }
                Ok(value)
            }
            Err(e) => Err(self.lose(&mut live, component, name, e)),
        }
    }

    /// Explains a failure and drops the poisoned store with everything in it.
    fn lose(
        &self,
        live: &mut MutexGuard<'_, Option<Live>>,
        component: &LoadedComponent,
        name: &'static str,
        error: wasmtime::Error,
    ) -> GuestError {
        let failure = match live.as_mut() {
            Some(Live { store, .. }) => {
                sandbox::classify(store.data_mut(), &component.limits, name, error)
            }
            None => GuestError::InstanceLost {
                aggregate: component.name.clone(),
            },
        };
        **live = None;
        lock(&self.released).clear();
        self.memory.store(0, Ordering::Relaxed);
        if !self.is_lost.swap(true, Ordering::AcqRel) {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        failure
    }

    /// Waits until no other caller holding a turn uses the instance; the
    /// turn lasts until the permit is dropped. (Callers that do not wait
    /// for a turn, such as a new state's placement, still take the lock.)
    pub(crate) async fn turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // Never closed, so acquiring only waits.
        self.turn.clone().acquire_owned().await.ok()
    }

    /// Whether a trap has made the instance unusable.
    pub(crate) fn is_lost(&self) -> bool {
        self.is_lost.load(Ordering::Acquire)
    }

    /// Bytes of linear memory the instance held after its last call.
    pub(crate) fn memory(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    /// What one state is charged of the instance's memory: an equal part
    /// for each place, so a full instance's states add up to its memory.
    /// (Charging by the states held now would charge the first state of
    /// an instance all of it, and the sum over the states would run past
    /// the memory when some leave.)
    pub(crate) fn memory_share(&self) -> usize {
        self.memory() / self.places
    }

    /// Gives back the place of a state that is no longer used; the state
    /// is freed in the guest by the instance's next call.
    pub(crate) fn release(&self, state: ResourceAny) {
        if !self.is_lost() {
            lock(&self.released).push(state);
        }
        self.vacate();
    }

    /// Gives back a reserved place that holds no state.
    pub(crate) fn vacate(&self) {
        self.tenants.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for SharedInstance {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No code panics while holding these locks with the data half-updated,
/// so a poisoned lock is taken as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
