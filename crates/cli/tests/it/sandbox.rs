//! The sandbox seen from the `eshost` process: what a hostile guest's logs
//! can do to its stderr.

use crate::util::*;
use std::time::Instant;

/// The hostile fixture's aggregate.
const HOSTILE: &str = "Hostile";

/// A guest logging 1 KiB lines as fast as it can is stopped by its time
/// budget like any loop; what reaches stderr stays within the per-call log
/// quota, and a newline in its text cannot start a forged line.
#[test]
fn a_log_flood_is_bounded_and_cannot_forge_lines() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    std::fs::copy(
        build_dir().join("fixtures/hostile.wasm"),
        modules.join("hostile.wasm"),
    )
    .unwrap();
    let database = format!("sqlite://{}", dir.path().join("events.db").display());
    // Under a wall-clock budget and under fuel, which charges each log call.
    for (budget, limit) in [
        (&[][..], "time limit exceeded"),
        (&["--guest-fuel", "100000000"][..], "fuel limit exceeded"),
    ] {
        let started = Instant::now();
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
            .arg("--modules")
            .arg(&modules)
            .args(["--database-url", &database])
            .args(budget)
            .args(["exec", HOSTILE, "h1", "LogFlood", "{}"])
            .env("RUST_LOG", "info")
            .env("ESHOST_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(limit), "{stderr}");
        assert!(stderr.contains("the rest were dropped"), "{stderr}");
        assert!(
            !stderr.lines().any(|line| line.starts_with("INFO forged")),
            "a guest forged a log line"
        );
        // 64 lines of about 1 KiB, their prefixes, and the error lines.
        assert!(
            run.stderr.len() < 100 << 10,
            "{} bytes of stderr",
            run.stderr.len()
        );
        eprintln!(
            "log flood ({limit}): {} bytes of stderr, exec took {elapsed:?}",
            run.stderr.len()
        );
    }
}
