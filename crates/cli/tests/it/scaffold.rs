//! Guests made outside this repository, as the book's "a guest of your
//! own" makes them: `eshost new`, `eshost build`, then `exec`, `state` and
//! the spec, in Rust, TypeScript and Python.

use crate::cli::{Workspace, ok};
use crate::util::*;
use std::path::Path;
use std::process::Command;

/// The book's steps for a guest of your own, outside this repository:
/// scaffold it, build it into a component, run it and its spec. A second
/// guest of the same crate name and version (as when a new version is
/// prepared beside the old) builds into its own folder and gets its own
/// component: in one shared folder, the second build handed back the
/// first one's.
#[test]
fn guests_made_outside_the_repository_build_and_run_each_from_its_own_sources() {
    let outside = tempfile::tempdir().unwrap();
    let eshost = |dir: &Path, args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_eshost"))
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "eshost {args:?}: {stderr}");
        stderr
    };
    let sdk = workspace_root().join("sdk/rust");
    let sdk = sdk.to_str().unwrap();
    let (first, second) = (outside.path().join("first"), outside.path().join("second"));
    for dir in [&first, &second] {
        std::fs::create_dir(dir).unwrap();
        let created = eshost(dir, &["new", "box-office", "--sdk", sdk]);
        assert!(created.contains("aggregate BoxOffice"), "{created}");
        let manifest = std::fs::read_to_string(dir.join("box-office/Cargo.toml")).unwrap();
        assert!(
            manifest.contains(sdk),
            "the SDK by the path given: {manifest}"
        );
    }
    // The second is another aggregate under the same crate name and version.
    let lib = second.join("box-office/src/lib.rs");
    let renamed = std::fs::read_to_string(&lib).unwrap().replace(
        r#"NAME: &'static str = "BoxOffice""#,
        r#"NAME: &'static str = "TicketDesk""#,
    );
    std::fs::write(&lib, renamed).unwrap();
    let modules = outside.path().join("modules");
    let other = outside.path().join("other");
    eshost(
        &first,
        &[
            "build",
            "box-office",
            "--out",
            modules.join("box-office.wasm").to_str().unwrap(),
        ],
    );
    eshost(
        &second,
        &[
            "build",
            "box-office",
            "--out",
            other.join("box-office.wasm").to_str().unwrap(),
        ],
    );
    assert!(first.join("box-office/target").is_dir() && second.join("box-office/target").is_dir());

    let ws = Workspace::with_modules(modules);
    ok(ws.run(&["exec", "BoxOffice", "b1", "Create", "{}"]));
    ok(ws.run(&["exec", "BoxOffice", "b1", "Increment", r#"{"by":2}"#]));
    let state: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["state", "BoxOffice", "b1"]))).unwrap();
    assert_eq!(state["count"], 2);
    let spec = first.join("box-office/box-office.spec.toml");
    let report = ok(ws.run(&["test", spec.to_str().unwrap()]));
    assert!(report.contains("2 passed, 0 failed"), "{report}");
    let listed = ok(Workspace::with_modules(other).run(&["aggregates", "--json"]));
    assert!(
        listed.contains(r#""name":"TicketDesk""#),
        "the second crate's own component: {listed}"
    );
}

/// A TypeScript or Python guest scaffolded outside the repository, its
/// dependencies installed as its `new` says, builds by a relative path and
/// runs. (A relative path once reached componentize-py, which runs in the
/// guest's directory, as a path that no longer led anywhere.)
fn a_guest_in_another_language_builds_and_runs(lang: &str) {
    let (name, aggregate) = ("box-office", "BoxOffice");
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path();
    let cache = dir.join("compiled");
    let run = |program: &str, args: &[&str]| {
        // The embedded store in `dir`, as a user who set nothing gets it.
        let output = Command::new(program)
            .current_dir(dir)
            .env_remove("DATABASE_URL")
            .env("ESHOST_CACHE_DIR", &cache)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{program} {args:?}: {stderr}");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let eshost = env!("CARGO_BIN_EXE_eshost");
    let sdk = workspace_root().join(format!("sdk/{lang}"));
    run(
        eshost,
        &["new", name, "--lang", lang, "--sdk", sdk.to_str().unwrap()],
    );
    match lang {
        "ts" => {
            run(
                "npm",
                &["install", "--prefix", name, "--no-audit", "--no-fund"],
            );
        }
        _ => {
            let venv = format!("{name}/.venv");
            run("python3", &["-m", "venv", &venv]);
            let requirements = format!("{name}/requirements.txt");
            let pip = format!("{venv}/bin/pip");
            run(&pip, &["install", "--quiet", "-r", &requirements]);
        }
    }
    let out = format!("modules/{name}.wasm");
    run(eshost, &["build", name, "--out", &out]);
    run(eshost, &["exec", aggregate, "b1", "Create", "{}"]);
    run(
        eshost,
        &["exec", aggregate, "b1", "Increment", r#"{"by":2}"#],
    );
    let state: serde_json::Value =
        serde_json::from_str(&run(eshost, &["state", aggregate, "b1"])).unwrap();
    assert_eq!(state["count"], 2, "{state}");
    let spec = format!("{name}/{name}.spec.toml");
    let report = run(eshost, &["test", &spec]);
    assert!(report.contains("2 passed, 0 failed"), "{report}");
}

#[test]
fn a_typescript_guest_made_outside_the_repository_builds_and_runs() {
    // Where `cargo xtask` could not build TypeScript, neither can a user.
    if TYPESCRIPT.modules_dir().is_some() {
        a_guest_in_another_language_builds_and_runs("ts");
    }
}

#[test]
fn a_python_guest_made_outside_the_repository_builds_and_runs() {
    if PYTHON.modules_dir().is_some() {
        a_guest_in_another_language_builds_and_runs("py");
    }
}
