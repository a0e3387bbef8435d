//! Hostile guests: each misbehaviour fails its command with its own error in
//! bounded time; the host survives, nothing is appended, and both the same
//! aggregate and a healthy one keep working.

use crate::util::*;
use eshost::wasm::{Budget, Limits, Runtime};
use eshost::{CommandError, CommandRequest, GuestError, Host, Modules, RetryPolicy};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTILE: &str = "Hostile";

/// What a hostile command's error must look like.
type ExpectedError = fn(&GuestError) -> bool;

/// A guest call blocks its thread, so a broken time limit would hang the test
/// rather than fail it; this ends the whole test process instead.
struct Watchdog(Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    fn start(deadline: Duration) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < deadline {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watchdog: a sandbox test ran past {deadline:?}; the guest was not stopped");
            std::process::exit(101);
        });
        Self(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn hostile_path() -> PathBuf {
    let path = build_dir().join("fixtures/hostile.wasm");
    assert!(
        path.exists(),
        "run the tests with `cargo xtask test` (builds the fixtures)"
    );
    path
}

async fn sandboxed_host(limits: Limits) -> (Arc<Host>, TestDb) {
    let runtime = Runtime::with_limits(limits);
    let mut modules = Modules::default();
    modules
        .insert(runtime.load(&hostile_path()).unwrap())
        .unwrap();
    modules
        .insert(
            runtime
                .load(&modules_dir().join("flash-sale.wasm"))
                .unwrap(),
        )
        .unwrap();
    let db = TestDb::sqlite().await;
    let store = eshost::store::open(&db.url).await.unwrap();
    (
        Arc::new(Host::new(modules, store, RetryPolicy::default())),
        db,
    )
}

fn tight_limits() -> Limits {
    Limits {
        budget: Budget::WallClock(Duration::from_millis(200)),
        memory_bytes: 32 << 20,
        ..Limits::default()
    }
}

fn hostile(command: &str) -> CommandRequest {
    CommandRequest::new(HOSTILE, "h1", command, "{}")
}

/// Runs one hostile command and returns its error, within a time bound.
async fn fails_in_time(host: &Host, command: &str) -> GuestError {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), host.execute(&hostile(command)))
        .await
        .unwrap_or_else(|_| panic!("{command}: the host hung"));
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "{command} took {elapsed:?}"
    );
    match result {
        Err(CommandError::Guest(e)) => e,
        other => panic!("{command}: expected a guest error, got {other:?}"),
    }
}

fn limit_of(error: &GuestError) -> &'static str {
    match error {
        GuestError::LimitExceeded { limit, .. } => limit,
        other => panic!("expected a limit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_command_fails_alone_and_the_host_survives() {
    let (host, db) = sandboxed_host(tight_limits()).await;
    // A healthy aggregate, cached in the host, and the hostile one with history.
    host.execute(&create("healthy", 20)).await.unwrap();
    host.execute(&hostile("Ok")).await.unwrap();

    let _watchdog = Watchdog::start(Duration::from_secs(60));
    let cases: [(&str, ExpectedError); 11] = [
        ("Loop", |e| limit_of(e) == "time"),
        ("Allocate", |e| limit_of(e) == "memory"),
        ("Recurse", |e| limit_of(e) == "stack"),
        ("ManyEvents", |e| limit_of(e) == "events per command"),
        ("HugePayload", |e| limit_of(e) == "payload size"),
        (
            "NulPayload",
            |e| matches!(e, GuestError::EventPayloadNotJson { reason, .. } if reason.contains("NUL")),
        ),
        ("Panic", |e| {
            matches!(e, GuestError::Panicked { message, .. }
                if message.contains("the hostile guest panics on purpose"))
        }),
        (
            "UndeclaredEvent",
            |e| matches!(e, GuestError::UndeclaredEvent { event, .. } if event == "NotDeclared"),
        ),
        ("InvalidJson", |e| {
            matches!(e, GuestError::EventPayloadNotJson { .. })
        }),
        // Traps without a panic: the message names the trap's kind.
        (
            "Unreachable",
            |e| matches!(e, GuestError::Trap { message, .. } if message.contains("unreachable")),
        ),
        (
            "OutOfBounds",
            |e| matches!(e, GuestError::Trap { message, .. } if message.contains("out of bounds")),
        ),
    ];
    let bought = cases.len() as u64;
    for (n, (command, expected)) in cases.into_iter().enumerate() {
        let error = fails_in_time(&host, command).await;
        assert!(expected(&error), "{command}: wrong error {error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("Hostile"),
            "names the aggregate: {message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");

        // Nothing appended; the same aggregate works again (a new instance);
        // the healthy aggregate's cached state is intact.
        assert_eq!(host.events(HOSTILE, "h1").await.unwrap().len(), n + 1);
        let ok = host.execute(&hostile("Ok")).await.unwrap();
        assert_eq!(ok.events[0].sequence, n as u64 + 2, "after {command}");
        let bought = host
            .execute(&purchase("healthy", &format!("after-{command}"), 1))
            .await
            .unwrap();
        assert_eq!(bought.events[0].name, "ItemPurchased");
    }
    let state = host.state(FLASH_SALE, "healthy").await.unwrap();
    assert_eq!(
        (state["stock"].as_u64(), state["sold"].as_u64()),
        (Some(20 - bought), Some(bought))
    );
    let events = host.events(HOSTILE, "h1").await.unwrap();
    assert_gapless(&events);
    db.cleanup().await;
}

#[tokio::test]
async fn a_fuel_budget_stops_a_loop_too() {
    let limits = Limits {
        budget: Budget::Fuel(5_000_000),
        ..Limits::default()
    };
    let (host, db) = sandboxed_host(limits).await;
    let _watchdog = Watchdog::start(Duration::from_secs(60));
    let error = fails_in_time(&host, "Loop").await;
    assert_eq!(limit_of(&error), "fuel");
    // Ordinary commands fit easily in the same budget.
    host.execute(&hostile("Ok")).await.unwrap();
    host.execute(&create("s", 1)).await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn an_oversized_command_payload_is_refused_before_the_guest() {
    let (host, db) = sandboxed_host(tight_limits()).await;
    let huge = format!(r#"{{"initialStock":1,"pad":"{}"}}"#, "x".repeat(100_000));
    let error = host
        .execute(&CommandRequest::new(
            FLASH_SALE,
            "big",
            "CreateFlashSale",
            huge,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::PayloadTooLarge { .. }),
        "{error:?}"
    );
    assert!(host.events(FLASH_SALE, "big").await.unwrap().is_empty());
    db.cleanup().await;
}

/// A state past 16 MiB is refused where the host would take it in (its
/// JSON, its snapshot), with an error naming the limit; the aggregate keeps
/// taking commands, and nothing is written for the refused snapshot.
#[tokio::test]
async fn state_and_snapshot_past_their_caps_are_refused() {
    // Memory enough that the caps, not the memory limit, are what stop it.
    let (host, db) = sandboxed_host(Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    })
    .await;
    host.execute(&hostile("Bloat")).await.unwrap();
    for (result, limit) in [
        (host.state(HOSTILE, "h1").await.map(drop), "state size"),
        (
            host.snapshot_now(HOSTILE, "h1").await.map(drop),
            "snapshot size",
        ),
    ] {
        let Err(CommandError::Guest(error)) = result else {
            panic!("{limit}: expected a guest error, got {result:?}");
        };
        assert_eq!(limit_of(&error), limit);
        let message = error.to_string();
        assert!(
            message.contains("16 MiB") || message.contains("16777216"),
            "{message}"
        );
        assert!(message.len() < 2048, "{message}");
    }
    let store = host.store();
    let digest = host.modules().get(HOSTILE).unwrap().digest.clone();
    let stream = eshost::StreamId::new(HOSTILE, "h1");
    assert_eq!(
        store
            .streams()
            .load_snapshot(&stream, &digest)
            .await
            .unwrap(),
        None
    );
    let outcome = host.execute(&hostile("Ok")).await.unwrap();
    assert_eq!(outcome.events[0].sequence, 2);
    db.cleanup().await;
}

/// A guest's refusal text reaches the caller as one line of at most 1 KiB.
#[tokio::test]
async fn a_long_refusal_is_cut_to_one_line() {
    let (host, db) = sandboxed_host(tight_limits()).await;
    let error = host.execute(&hostile("LongRefusal")).await.unwrap_err();
    assert!(matches!(error, CommandError::Refused { .. }), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains('\n'), "{message}");
    assert!(message.len() < 2048, "{} bytes", message.len());
    assert!(message.contains("no\\nERROR forged: xxx"), "{message}");
    db.cleanup().await;
}
