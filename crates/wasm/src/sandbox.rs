//! What a guest call may use, and what happens when it uses more.
//!
//! - Execution: a wall-clock budget per call (wasmtime epoch interruption, a
//!   ticker thread advancing the epoch every [`EPOCH_TICK`]), or a fuel budget
//!   (a count of executed instructions, deterministic but slower to run).
//! - Memory: an instance holds at most [`MAX_MEMORIES`] linear memory (the
//!   engine refuses multi-memory modules at load) and [`MAX_TABLES`] tables
//!   in at most [`MAX_INSTANCES`] core instances; all its memory together
//!   may not grow past [`Limits::memory_bytes`].
//! - Stack: wasmtime's own stack limit.
//! - Output: at most [`Limits::max_events_per_command`] events, each payload
//!   (and each command payload) at most [`Limits::max_payload_bytes`].
//!
//! - Logging: `host.log` keeps at most [`MAX_LOG_LINES_PER_CALL`] lines and
//!   [`MAX_LOG_BYTES_PER_CALL`] bytes a call, and under a fuel budget each
//!   call costs [`LOG_CALL_FUEL`] plus a unit per byte: host time counts.
//!
//! A call that breaks a limit traps; the instance is thrown away (wasmtime
//! will not re-enter it) and the command fails with an error naming the
//! aggregate and the limit. A panic's message reaches the host through the
//! one import a guest has, `host.log`.

use super::contract::HOST_INTERFACES;
use super::contract::v1::eshost::aggregate::host::Level;
use crate::error::GuestError;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, trace, warn};
use wasmtime::component::Linker;
use wasmtime::{Engine, ResourceLimiter, Store, StoreContextMut, Trap};

/// How often the epoch advances when calls have a wall-clock budget.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memories one instance may hold: the contract needs one, and the
/// memory limit is only a limit if nothing can add memories beside it.
pub const MAX_MEMORIES: usize = 1;

/// Tables one instance may hold (a component's glue adds a few).
pub const MAX_TABLES: usize = 16;

/// Core instances one component instance may hold (a Rust guest has a
/// handful; components built from other languages link more modules).
pub const MAX_INSTANCES: usize = 64;

/// Log lines longer than this are cut, so a guest cannot flood the log.
const MAX_LOG_LINE: usize = 4096;

/// Lines one guest call may log; later ones are dropped and counted.
pub const MAX_LOG_LINES_PER_CALL: usize = 64;

/// Bytes one guest call may log; later lines are dropped and counted.
pub const MAX_LOG_BYTES_PER_CALL: usize = 64 << 10;

/// Fuel one `host.log` call costs under a fuel budget, plus one per byte of
/// its message: about what the host spends on it, counted in instructions,
/// so a budget bounds a call's time whether the guest computes or logs.
pub const LOG_CALL_FUEL: u64 = 1_000;

/// How a guest call's execution is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Wall-clock time per call (epoch interruption). The default: it costs
    /// least per call (the book's Benchmarks page has the figures).
    WallClock(Duration),
    /// Instructions per call (fuel): deterministic, but every instruction
    /// pays for the bookkeeping.
    Fuel(u64),
}

/// Limits on every guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub budget: Budget,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Events one command may produce.
    pub max_events_per_command: usize,
    /// Bytes of one command payload or one event payload.
    pub max_payload_bytes: usize,
    /// Hydrated aggregates one instance holds at most (1: an instance
    /// each). They share its memory limit, and a trap in it makes every
    /// one of them be rebuilt from the store.
    pub aggregates_per_instance: usize,
}

/// Hydrated aggregates one instance holds when no number is given.
pub const DEFAULT_AGGREGATES_PER_INSTANCE: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Self {
            budget: Budget::WallClock(Duration::from_secs(1)),
            memory_bytes: 64 << 20,
            max_events_per_command: 100,
            max_payload_bytes: 64 << 10,
            aggregates_per_instance: DEFAULT_AGGREGATES_PER_INSTANCE,
        }
    }
}

/// Sets the engine up for a budget (epoch interruption or fuel), with
/// multi-memory off (a module declaring a second memory is refused at load)
/// and NaNs canonicalised (a float operation's NaN has the same bits on
/// every CPU, so a replay elsewhere decides the same).
pub(crate) fn configure(config: &mut wasmtime::Config, budget: Budget) {
    config.wasm_multi_memory(false);
    config.cranelift_nan_canonicalization(true);
    match budget {
        Budget::WallClock(_) => config.epoch_interruption(true),
        Budget::Fuel(_) => config.consume_fuel(true),
    };
}

/// Advances the engine's epoch every tick until the engine is dropped.
pub(crate) fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("eshost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        // Without the ticker, a wall-clock budget never fires: say so loudly.
        error!(error = %e, "could not start the epoch ticker; guest calls are not time-limited");
    }
}

/// A store for one instance, with the memory limiter attached.
pub(crate) fn new_store(
    engine: &Engine,
    aggregate: Arc<str>,
    limits: &Limits,
) -> Store<GuestContext> {
    new_store_with(engine, GuestContext::new(aggregate, limits))
}

/// A store for one instance whose context is `context`, with the memory
/// limiter attached.
pub(crate) fn new_store_with<V: Send + 'static>(
    engine: &Engine,
    context: GuestContext<V>,
) -> Store<GuestContext<V>> {
    let wall_clock = !context.fuel_budget;
    let mut store = Store::new(engine, context);
    store.limiter(|context| context);
    if wall_clock {
        // Called at every tick a call is still running: the budget is
        // counted here, and a call that outlives its first tick gives up
        // the async worker it may be running on (see `pool`).
        store.epoch_deadline_callback(|mut store| {
            let context = store.data_mut();
            if context.ticks_left == 0 {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            context.ticks_left -= 1;
            super::pool::leave_async_worker();
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
    }
    store
}

/// Gives the next call its budget and a clean slate.
pub(crate) fn arm<V: Send>(store: &mut Store<GuestContext<V>>, limits: &Limits) {
    store.data_mut().start_call();
    match limits.budget {
        Budget::WallClock(duration) => {
            // One tick more than the budget: the first tick may come at
            // once. Each tick reaches the callback set in `new_store_with`.
            let ticks = duration.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
            store.data_mut().ticks_left = u64::try_from(ticks).unwrap_or(u64::MAX);
            store.set_epoch_deadline(1);
        }
        Budget::Fuel(fuel) => {
            if let Err(e) = store.set_fuel(fuel) {
                error!(error = %e, "could not set fuel; is the engine configured for it?");
            }
        }
    }
}

/// Per-instance host data inside a wasmtime `Store`. `V` is what a
/// projection guest's `view.get` reads from; an aggregate guest has none.
pub struct GuestContext<V = ()> {
    /// The aggregate or projection the instance runs, for log lines.
    aggregate: Arc<str>,
    /// Calls are bounded by fuel, so imports are charged fuel too.
    fuel_budget: bool,
    /// Epoch ticks the current call may still outlive (wall-clock budget).
    ticks_left: u64,
    memory_bytes: usize,
    /// Set when the limiter refused to grow memory.
    memory_exceeded: bool,
    /// Bytes of linear memory the instance holds now, all memories counted.
    memory_used: usize,
    /// The error-level line the guest logged in the current call (a panic
    /// hook's message), not yet written out.
    last_error: Option<String>,
    /// Lines and bytes logged in the current call, and lines dropped for
    /// being over the quota.
    logged_lines: usize,
    logged_bytes: usize,
    dropped_lines: usize,
    pub(crate) view: V,
}

impl GuestContext {
    pub fn new(aggregate: Arc<str>, limits: &Limits) -> Self {
        Self::with_view(aggregate, limits, ())
    }
}

impl<V> GuestContext<V> {
    /// A context whose `view.get` import reads from `view`.
    pub fn with_view(aggregate: Arc<str>, limits: &Limits, view: V) -> Self {
        Self {
            aggregate,
            memory_bytes: limits.memory_bytes,
            fuel_budget: matches!(limits.budget, Budget::Fuel(_)),
            ticks_left: 0,
            memory_exceeded: false,
            memory_used: 0,
            last_error: None,
            logged_lines: 0,
            logged_bytes: 0,
            dropped_lines: 0,
            view,
        }
    }

    /// Bytes of linear memory the instance holds now.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Starts a call: an error line the previous call logged without trapping
    /// is written out now, and the log quota starts afresh.
    pub(crate) fn start_call(&mut self) {
        self.flush_error();
        self.report_dropped();
        self.logged_lines = 0;
        self.logged_bytes = 0;
    }

    fn report_dropped(&mut self) {
        if self.dropped_lines > 0 {
            warn!(
                aggregate = &*self.aggregate,
                dropped = self.dropped_lines,
                "a guest call logged more than {MAX_LOG_LINES_PER_CALL} lines or {} KiB; the rest were dropped",
                MAX_LOG_BYTES_PER_CALL >> 10
            );
            self.dropped_lines = 0;
        }
    }

    fn flush_error(&mut self) {
        if let Some(message) = self.last_error.take() {
            error!(aggregate = &*self.aggregate, "{message}");
        }
    }
}

impl<V> Drop for GuestContext<V> {
    fn drop(&mut self) {
        self.flush_error();
        self.report_dropped();
    }
}

impl<V: Send> ResourceLimiter for GuestContext<V> {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // All of the instance's memories count against one budget.
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_exceeded = true;
            // Trap at once rather than hand the guest a failed allocation:
            // its allocator would abort anyway, with a less useful message.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        // Called on creation too (current 0), so this counts every memory.
        self.memory_used = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}

/// Links the one import a guest may have, `host.log`. Written out rather
/// than generated so the call can reach the store and be charged fuel.
pub(crate) fn link_host<V: Send + 'static>(
    linker: &mut Linker<GuestContext<V>>,
) -> wasmtime::Result<()> {
    // Both versions of the contract declare the same `log`; the enum's
    // cases are what wasmtime checks, so one Rust `Level` serves both.
    for interface in HOST_INTERFACES {
        linker.instance(interface)?.func_wrap(
            "log",
            |mut store: StoreContextMut<'_, GuestContext<V>>, (level, message): (Level, String)| {
                charge_fuel(
                    &mut store,
                    LOG_CALL_FUEL.saturating_add(message.len() as u64),
                )?;
                store.data_mut().log(level, message);
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Takes `cost` from the call's fuel, if it runs on fuel; when less is
/// left, the call ends as if it had run out computing.
pub(crate) fn charge_fuel<V>(
    store: &mut StoreContextMut<'_, GuestContext<V>>,
    cost: u64,
) -> wasmtime::Result<()> {
    if !store.data().fuel_budget {
        // A wall-clock budget: the epoch counts host time already. (Asking
        // the store for fuel would say so with an error, and an error
        // costs a backtrace: tens of microseconds per import call.)
        return Ok(());
    }
    let left = store.get_fuel()?;
    match left.checked_sub(cost) {
        Some(left) => store.set_fuel(left),
        None => {
            store.set_fuel(0)?;
            Err(Trap::OutOfFuel.into())
        }
    }
}

impl<V> GuestContext<V> {
    fn log(&mut self, level: Level, message: String) {
        // One line (a newline cannot forge a host log line), cut; and
        // within the call's quota, or dropped and counted. A call's last
        // error line (a panic's message) is kept whatever the quota.
        self.logged_lines += 1;
        self.logged_bytes = self
            .logged_bytes
            .saturating_add(message.len().min(MAX_LOG_LINE));
        let over = self.logged_lines > MAX_LOG_LINES_PER_CALL
            || self.logged_bytes > MAX_LOG_BYTES_PER_CALL;
        if over && !matches!(level, Level::Error) {
            // Dropped before any copy: a flood costs a count per line.
            self.dropped_lines += 1;
            return;
        }
        let message = one_line(&message, MAX_LOG_LINE);
        let aggregate = &*self.aggregate;
        match level {
            Level::Trace => trace!(aggregate, "{message}"),
            Level::Debug => debug!(aggregate, "{message}"),
            Level::Info => info!(aggregate, "{message}"),
            Level::Warn => warn!(aggregate, "{message}"),
            // Held until the call ends: if it traps, the line explains the
            // trap (one error, not a log line and an error); if not, it is
            // written out then.
            Level::Error => {
                self.flush_error();
                self.last_error = Some(message);
            }
        }
    }
}

/// Turns a failed guest call into the error that explains it.
pub(crate) fn classify<V>(
    context: &mut GuestContext<V>,
    limits: &Limits,
    call: &'static str,
    error: wasmtime::Error,
) -> GuestError {
    let aggregate = context.aggregate.to_string();
    let limit = |limit: &'static str, detail: String| GuestError::LimitExceeded {
        aggregate: aggregate.clone(),
        call,
        limit,
        detail,
    };
    if context.memory_exceeded {
        return limit(
            "memory",
            format!("memory may not grow past {} MiB", limits.memory_bytes >> 20),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            let budget = match limits.budget {
                Budget::WallClock(d) => format!("{} ms", d.as_millis()),
                Budget::Fuel(f) => format!("{f} fuel"),
            };
            return limit("time", format!("the call ran past its budget of {budget}"));
        }
        Some(Trap::OutOfFuel) => {
            let fuel = match limits.budget {
                Budget::Fuel(f) => f,
                Budget::WallClock(_) => 0,
            };
            return limit("fuel", format!("the call used all of its {fuel} fuel"));
        }
        Some(Trap::StackOverflow) => {
            return limit("stack", "the call stack overflowed".to_string());
        }
        _ => {}
    }
    if let Some(message) = context.last_error.take() {
        return GuestError::Panicked {
            aggregate,
            call,
            message,
        };
    }
    // The trap itself says what happened (unreachable, out of bounds ...);
    // wasmtime's outer context is only "error while executing at" and a
    // backtrace.
    let cause = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    GuestError::Trap {
        aggregate,
        call,
        message: one_line(&cause, MAX_ERROR_TEXT),
    }
}

/// Guest-influenced text in an error: one line, at most this many bytes.
const MAX_ERROR_TEXT: usize = 1024;

/// `text` as one line (newlines escaped) cut to at most `max` bytes, in one
/// pass that stops at the cut: the text may be as long as a guest likes.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut line = String::with_capacity(text.len().min(max) + '…'.len_utf8());
    for c in text.chars() {
        let escaped = match c {
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            _ => None,
        };
        if line.len() + escaped.map_or(c.len_utf8(), str::len) > max {
            line.push('…');
            break;
        }
        match escaped {
            Some(escaped) => line.push_str(escaped),
            None => line.push(c),
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instantiates a component given as text in a sandboxed store, with
    /// `host.log` to import.
    fn instantiate_in(
        text: &str,
        limits: &Limits,
    ) -> wasmtime::Result<(Store<GuestContext>, wasmtime::component::Instance)> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        configure(&mut config, limits.budget);
        let engine = Engine::new(&config)?;
        let component = wasmtime::component::Component::new(&engine, wat::parse_str(text)?)?;
        let mut store = new_store(&engine, "Test".into(), limits);
        arm(&mut store, limits);
        let mut linker = Linker::<GuestContext>::new(&engine);
        link_host(&mut linker)?;
        let instance = linker.instantiate(&mut store, &component)?;
        Ok((store, instance))
    }

    fn instantiate(text: &str) -> wasmtime::Result<()> {
        instantiate_in(text, &Limits::default()).map(drop)
    }

    #[test]
    fn a_nan_has_the_same_bits_on_every_cpu() {
        // x / x for x = 0: x86 gives 0xffc00000, aarch64 0x7fc00000.
        let divide = r#"(component
            (core module $m
              (func (export "nan") (param f32) (result i32)
                local.get 0 local.get 0 f32.div i32.reinterpret_f32))
            (core instance $i (instantiate $m))
            (func (export "nan") (param "x" f32) (result u32)
              (canon lift (core func $i "nan"))))"#;
        let (mut store, instance) = instantiate_in(divide, &Limits::default()).unwrap();
        let nan = instance
            .get_typed_func::<(f32,), (u32,)>(&mut store, "nan")
            .unwrap();
        let (bits,) = nan.call(&mut store, (0.0,)).unwrap();
        assert_eq!(bits, 0x7fc0_0000, "{bits:#x}");
    }

    #[test]
    fn an_instance_holds_one_memory_whatever_it_declares() {
        let one = "(component (core module $m (memory 1)) (core instance (instantiate $m)))";
        instantiate(one).unwrap();
        // Two core instances, each with a memory: a second memory beside
        // the budgeted one, were it allowed.
        let two = "(component (core module $m (memory 1))
                     (core instance (instantiate $m)) (core instance (instantiate $m)))";
        let refused = format!("{:#}", instantiate(two).unwrap_err());
        assert!(refused.contains("memory count"), "{refused}");
    }

    #[test]
    fn a_module_with_two_memories_is_refused() {
        let refused = instantiate("(component (core module (memory 1) (memory 1)))").unwrap_err();
        let refused = format!("{refused:#}");
        assert!(refused.contains("multiple memories"), "{refused}");
    }

    #[test]
    fn memory_beyond_the_budget_is_refused_at_instantiation() {
        // 1,025 pages of 64 KiB: one page past the 64 MiB default.
        let big = "(component (core module $m (memory 1025)) (core instance (instantiate $m)))";
        assert!(instantiate(big).is_err());
    }

    #[test]
    fn logging_is_charged_to_fuel() {
        // A guest that logs 16 bytes, forever.
        let flood = r#"(component
            (import "eshost:aggregate/host@0.1.0" (instance $host
              (type $level (enum "trace" "debug" "info" "warn" "error"))
              (export "level" (type $level_eq (eq $level)))
              (export "log" (func (param "level" $level_eq) (param "message" string)))))
            (core module $memory (memory (export "memory") 1))
            (core instance $memory (instantiate $memory))
            (alias export $host "log" (func $log))
            (core func $log_lowered (canon lower (func $log) (memory $memory "memory")))
            (core module $m
              (import "host" "log" (func $log (param i32 i32 i32)))
              (func (export "flood")
                (loop $again
                  (call $log (i32.const 2) (i32.const 0) (i32.const 16))
                  (br $again))))
            (core instance $i (instantiate $m
              (with "host" (instance (export "log" (func $log_lowered))))))
            (func (export "flood") (canon lift (core func $i "flood"))))"#;
        let fuel = 10_000_000;
        let limits = Limits {
            budget: Budget::Fuel(fuel),
            ..Limits::default()
        };
        let (mut store, instance) = instantiate_in(flood, &limits).unwrap();
        let flood = instance
            .get_typed_func::<(), ()>(&mut store, "flood")
            .unwrap();
        arm(&mut store, &limits);
        let error = flood.call(&mut store, ()).unwrap_err();
        // Uncharged, each call would cost the loop's few instructions: a
        // million calls or more.
        let calls = store.data().logged_lines as u64;
        assert!(
            calls <= fuel / (LOG_CALL_FUEL + 16) + 1,
            "{calls} log calls on {fuel} fuel"
        );
        let error = classify(store.data_mut(), &limits, "handle", error);
        assert!(
            matches!(error, GuestError::LimitExceeded { limit: "fuel", .. }),
            "{error:?}"
        );
    }
}
