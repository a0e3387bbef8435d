//! Build helper for the eshost workspace (`cargo xtask ...`).
//!
//! - `build-guests`: compiles every guest crate for `wasm32-unknown-unknown`
//!   and wraps each core module into a component in `target/modules/` (test
//!   fixtures in `target/fixtures/`).
//! - `test [ARGS]`: `build-guests`, installs schemathesis (the API
//!   conformance test runs it) into `target/tools/`, then
//!   `cargo test --workspace [ARGS]`.
//! - `demo [ARGS]`: `build-guests`, then `eshost demo flash-sale [ARGS]`.
//!
//! The wasm32 standard library comes from rustup when the target is installed
//! (`rustup target add wasm32-unknown-unknown`). Otherwise the build falls back
//! to Debian's `rustc-web` + `rust-web-src` + `lld` and builds std from source
//! (`-Zbuild-std`) into its own target directory, so the two never mix.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

/// Guest crates and the component file each one becomes, under `target/`.
/// Real guests go to `modules/` (eshost's default modules directory); test
/// fixtures to `fixtures/`, where nothing loads them by accident.
const GUESTS: &[(&str, &str)] = &[
    ("guest-flash-sale", "modules/flash-sale.wasm"),
    ("guest-bank-account", "modules/bank-account.wasm"),
    ("guest-hostile", "fixtures/hostile.wasm"),
    ("guest-importer", "fixtures/importer/importer.wasm"),
    ("guest-flash-sale-v2", "fixtures/upgrade/flash-sale-v2.wasm"),
    (
        "guest-flash-sale-renamed",
        "fixtures/upgrade/flash-sale-renamed.wasm",
    ),
];

/// Where the Debian fallback lives.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_STD_SOURCE: &str = "/usr/lib/rustlib/src/rust/library";

fn main() -> std::process::ExitCode {
    match run_task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    // `cargo xtask demo -- --json` and `cargo xtask demo --json` mean the same.
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    match task.as_str() {
        "build-guests" => build_guests().map(|_| ()),
        "test" => {
            build_guests()?;
            let schemathesis = schemathesis()?;
            let mut cargo = cargo();
            cargo
                .args(["test", "--workspace"])
                .args(&rest)
                .env("ESHOST_SCHEMATHESIS", schemathesis);
            run(&mut cargo)
        }
        "demo" => {
            let modules = build_guests()?;
            let mut cargo = cargo();
            cargo
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "eshost",
                    "--",
                    "demo",
                    "flash-sale",
                    "--modules",
                ])
                .arg(modules)
                .args(&rest);
            run(&mut cargo)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <build-guests | test [CARGO TEST ARGS] | demo [DEMO ARGS]>"
            );
            std::process::exit(2);
        }
    }
}

/// The schemathesis version the API conformance test runs, from PyPI.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Installs schemathesis into its own virtual environment under
/// `target/tools/` (once; kept between runs) and returns its executable.
fn schemathesis() -> Result<PathBuf> {
    let venv = workspace_root().join("target/tools/schemathesis");
    let executable = venv.join("bin/schemathesis");
    let stamp = venv.join("installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == SCHEMATHESIS) && executable.exists() {
        return Ok(executable);
    }
    eprintln!("xtask: installing {SCHEMATHESIS} into {}", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv (Debian: apt-get install python3-venv)")?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", SCHEMATHESIS]))?;
    std::fs::write(&stamp, SCHEMATHESIS)?;
    Ok(executable)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        // The child has said what went wrong; pass its exit code on.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// How the wasm32 standard library is obtained on this machine.
enum Toolchain {
    /// `rustup target add wasm32-unknown-unknown` was done.
    Rustup,
    /// Debian's compiler builds std from source.
    DebianBuildStd,
}

fn detect_toolchain() -> Result<Toolchain> {
    // `--print target-libdir` names the directory whether or not it exists;
    // it exists only when the target's standard library is installed.
    let output = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    if let Ok(output) = output {
        let libdir = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !libdir.is_empty() && Path::new(&libdir).is_dir() {
            return Ok(Toolchain::Rustup);
        }
    }
    if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_STD_SOURCE).is_dir() {
        return Ok(Toolchain::DebianBuildStd);
    }
    bail!(
        "no wasm32 toolchain: run `rustup target add {TARGET}`, or on Debian \
         `apt-get install rustc-web rust-web-src lld`"
    )
}

/// Builds every guest and returns the modules directory holding the components.
fn build_guests() -> Result<PathBuf> {
    let root = workspace_root();
    let toolchain = detect_toolchain()?;
    let mut cargo = cargo();
    cargo.args(["build", "--release", "--target", TARGET]);
    for (package, _) in GUESTS {
        cargo.args(["-p", package]);
    }
    let target_dir = match toolchain {
        Toolchain::Rustup => root.join("target"),
        Toolchain::DebianBuildStd => {
            let dir = root.join("target/wasm-fallback");
            cargo
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
                .arg("-Zbuild-std=std,panic_abort")
                .arg("--target-dir")
                .arg(&dir);
            dir
        }
    };
    run(&mut cargo).context("building the guest crates")?;

    for (package, component_path) in GUESTS {
        let core = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let bytes = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .with_context(|| format!("{package}: not a guest module"))?
            .validate(true)
            .encode()
            .with_context(|| format!("{package}: encoding the component"))?;
        let out = root.join("target").join(component_path);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Rewrite only on change, so the file's mtime means something.
        if std::fs::read(&out).ok().as_deref() != Some(component.as_slice()) {
            std::fs::write(&out, &component)?;
        }
        eprintln!("guest {package} -> {}", out.display());
    }
    Ok(root.join("target/modules"))
}
