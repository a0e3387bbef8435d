//! `eshost build`: a guest's sources into a component, whatever its
//! language. A Rust crate is compiled for wasm32 and wrapped
//! (`eshost-guest-build`); a TypeScript guest runs its own `npm run build`;
//! a Python guest runs componentize-py with WASI stubbed out.

use anyhow::{Context, Result, bail};
use clap::Args;
use eshost_guest_build::{GuestCrate, Toolchain};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Build a guest into a component (.wasm), ready for a modules directory.
///
/// Rust (a Cargo.toml): compiled for wasm32-unknown-unknown in the crate's
/// own target/ (rustup's target, or, where rustup cannot fetch it, Debian's
/// rustc-web and rust-web-src building std from source), then wrapped.
/// TypeScript (a package.json): its `npm run build`. Python (an app.py):
/// componentize-py from its .venv or PATH, WASI stubbed out, world
/// aggregate-guest (beside an aggregate.py) or reactor-guest (an app.py
/// that imports eshost_guest.reactor).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eshost build\n  \
    eshost build box-office --out modules/box-office.wasm")]
pub struct BuildArgs {
    /// The guest's directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Where to write the component [default: Rust: PATH/target/NAME.wasm;
    /// TypeScript and Python: PATH/NAME.wasm].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> Result<()> {
    // Absolute, because the build tools run in the guest's directory.
    let dir = &std::path::absolute(&args.path)
        .with_context(|| format!("{}: cannot resolve the path", args.path.display()))?;
    let out = match &args.out {
        Some(out) => Some(std::path::absolute(out)?),
        None => None,
    };
    let component = if dir.join("Cargo.toml").is_file() {
        let guest = GuestCrate::at(dir)?;
        guest.build(Toolchain::detect()?, None, out.as_deref())?
    } else if dir.join("package.json").is_file() {
        typescript(dir, out)?
    } else if dir.join("app.py").is_file() {
        python(dir, out)?
    } else {
        bail!(
            "{}: no guest here (a Cargo.toml, a package.json or an app.py); `eshost new` makes one",
            dir.display()
        );
    };
    eprintln!("built {}", component.display());
    Ok(())
}

/// The guest's name: its directory's.
fn name_of(dir: &Path) -> Result<String> {
    let dir = std::path::absolute(dir)?;
    dir.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{}: cannot name the guest after it", dir.display()))
}

fn typescript(dir: &Path, out: Option<PathBuf>) -> Result<PathBuf> {
    if !dir.join("node_modules").is_dir() {
        bail!(
            "{}: no node_modules; run `npm install` there first",
            dir.display()
        );
    }
    let out = match out {
        Some(out) => out,
        None => std::path::absolute(dir.join(format!("{}.wasm", name_of(dir)?)))?,
    };
    let status = Command::new("npm")
        .args(["run", "--silent", "build", "--"])
        .arg(&out)
        .current_dir(dir)
        .status()
        .context("running npm (Node.js 20 or later builds a TypeScript guest)")?;
    if !status.success() {
        bail!("npm run build failed (its errors are above)");
    }
    Ok(out)
}

/// The WIT world a Python guest is built for: an aggregate names its
/// resource's module `aggregate.py`; a reactor imports the SDK's reactor
/// module.
fn python_world(dir: &Path) -> Result<&'static str> {
    if dir.join("aggregate.py").is_file() {
        return Ok("aggregate-guest");
    }
    let app = std::fs::read_to_string(dir.join("app.py"))
        .with_context(|| format!("{}: cannot read app.py", dir.display()))?;
    if app.contains("eshost_guest.reactor") {
        return Ok("reactor-guest");
    }
    bail!(
        "{}: neither an aggregate (no aggregate.py) nor a reactor (app.py does not import eshost_guest.reactor)",
        dir.display()
    )
}

fn python(dir: &Path, out: Option<PathBuf>) -> Result<PathBuf> {
    let world = python_world(dir)?;
    let out = match out {
        Some(out) => out,
        None => std::path::absolute(dir.join(format!("{}.wasm", name_of(dir)?)))?,
    };
    let venv = dir.join(".venv/bin/componentize-py");
    let tool = if venv.is_file() {
        venv
    } else {
        PathBuf::from("componentize-py")
    };
    let mut build = Command::new(&tool);
    build
        .current_dir(dir)
        .args(["-d", "wit", "-w", world, "componentize", "app", "-p", "."])
        .args(site_packages(dir))
        .arg("--stub-wasi")
        .arg("-o")
        .arg(&out)
        // No __pycache__ beside the sources.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let status = build.status().with_context(|| {
        format!(
            "running {} (pip install -r requirements.txt into {}/.venv first)",
            tool.display(),
            dir.display()
        )
    })?;
    if !status.success() {
        bail!("componentize-py failed (its errors are above)");
    }
    Ok(out)
}

/// `-p DIR` for the guest's virtual environment's site-packages, where
/// `pip install -r requirements.txt` put the SDK.
fn site_packages(dir: &Path) -> Vec<String> {
    let lib = dir.join(".venv/lib");
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path().join("site-packages")))
        .filter(|path| path.is_dir())
        .flat_map(|path| ["-p".to_string(), path.display().to_string()])
        .collect()
}
