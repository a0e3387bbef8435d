//! Building a guest crate into a component, wherever the crate lives:
//! `cargo build --release --target wasm32-unknown-unknown`, then wrapping
//! the core module into a component of the contract's world
//! (`wit-component`). `eshost build` and `cargo xtask` both use it.
//!
//! The wasm32 standard library comes from rustup when its target is
//! installed (`rustup target add wasm32-unknown-unknown`). Otherwise the
//! build falls back to Debian's compiler and the standard library's source
//! (`apt-get install rustc-web rust-web-src lld`), building std with
//! `-Zbuild-std` into a target directory of its own, so the two never mix.
//!
//! Each crate builds in a target directory of its own (its own `target/`
//! unless told otherwise): two crates with one package name and version,
//! say version 1.1.0 beside 1.0.0 while preparing an upgrade, never get
//! each other's output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target guests are compiled for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Where the Debian fallback lives.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_STD_SOURCE: &str = "/usr/lib/rustlib/src/rust/library";

/// Why a guest could not be built. The message is one line, and says what
/// to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no wasm32 toolchain: run `rustup target add {TARGET}`, or on Debian `apt-get install rustc-web rust-web-src lld`"
    )]
    NoToolchain,
    #[error("{0}: no Cargo.toml (not a crate)")]
    NotACrate(PathBuf),
    #[error("{0}: no cdylib target (a guest needs [lib] crate-type = [\"cdylib\"])")]
    NoCdylib(PathBuf),
    #[error("{what}: {reason}")]
    Tool { what: String, reason: String },
    #[error("{crate_name}: cargo build failed (its errors are above)")]
    Compile { crate_name: String },
    #[error("{crate_name}: {reason}")]
    NotAGuest { crate_name: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the wasm32 standard library is obtained on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// `rustup target add wasm32-unknown-unknown` was done.
    Rustup,
    /// Debian's compiler builds std from source.
    DebianBuildStd,
}

impl Toolchain {
    /// What this machine has.
    pub fn detect() -> Result<Self, BuildError> {
        // `--print target-libdir` names the directory whether or not it
        // exists; it exists only when the target's standard library is
        // installed.
        let output = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", TARGET])
            .output();
        if let Ok(output) = output {
            let libdir = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && !libdir.is_empty() && Path::new(&libdir).is_dir() {
                return Ok(Self::Rustup);
            }
        }
        if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_STD_SOURCE).is_dir() {
            return Ok(Self::DebianBuildStd);
        }
        Err(BuildError::NoToolchain)
    }

    /// `cargo build --release --target wasm32-unknown-unknown` with this
    /// toolchain, into `target_dir` (the fallback into a directory of its
    /// own inside it). The caller adds what to build (`-p`, or
    /// `--manifest-path`). Returns the command and the directory that will
    /// hold the core `.wasm` files.
    pub fn cargo_build(self, target_dir: &Path) -> (Command, PathBuf) {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--release", "--target", TARGET]);
        let target_dir = match self {
            Self::Rustup => target_dir.to_path_buf(),
            Self::DebianBuildStd => {
                cargo
                    .env("RUSTC", DEBIAN_RUSTC)
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
                    .arg("-Zbuild-std=std,panic_abort");
                target_dir.join("wasm-fallback")
            }
        };
        cargo.arg("--target-dir").arg(&target_dir);
        (cargo, target_dir.join(TARGET).join("release"))
    }
}

/// A guest crate: where it is, its package name and its library's name.
#[derive(Debug, Clone)]
pub struct GuestCrate {
    pub manifest: PathBuf,
    pub package: String,
    /// The `cdylib` target's name, as the `.wasm` file is named.
    pub library: String,
}

impl GuestCrate {
    /// The guest crate in `dir` (asked of `cargo metadata`, not read by hand).
    pub fn at(dir: &Path) -> Result<Self, BuildError> {
        let manifest = dir
            .join("Cargo.toml")
            .canonicalize()
            .map_err(|_| BuildError::NotACrate(dir.to_path_buf()))?;
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .arg("--manifest-path")
            .arg(&manifest)
            .output()
            .map_err(|e| BuildError::Tool {
                what: "cargo metadata".into(),
                reason: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(BuildError::Tool {
                what: "cargo metadata".into(),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| BuildError::Tool {
                what: "cargo metadata".into(),
                reason: e.to_string(),
            })?;
        let package = metadata["packages"]
            .as_array()
            .and_then(|packages| {
                packages
                    .iter()
                    .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(&manifest))
            })
            .ok_or_else(|| BuildError::NotACrate(dir.to_path_buf()))?;
        let library = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
            })
            .and_then(|t| t["name"].as_str())
            .ok_or_else(|| BuildError::NoCdylib(manifest.clone()))?;
        Ok(Self {
            package: package["name"].as_str().unwrap_or(library).to_string(),
            library: library.replace('-', "_"),
            manifest,
        })
    }

    /// The crate's own directory.
    pub fn dir(&self) -> &Path {
        self.manifest.parent().unwrap_or(Path::new("."))
    }

    /// Builds the crate into `target_dir` (default: its own `target/`) and
    /// wraps it into a component at `out` (default:
    /// `target/PACKAGE.wasm`). Returns the component's path.
    pub fn build(
        &self,
        toolchain: Toolchain,
        target_dir: Option<&Path>,
        out: Option<&Path>,
    ) -> Result<PathBuf, BuildError> {
        let own_target = self.dir().join("target");
        let target_dir = target_dir.unwrap_or(&own_target);
        let (mut cargo, release) = toolchain.cargo_build(target_dir);
        cargo.arg("--manifest-path").arg(&self.manifest);
        let status = cargo.status().map_err(|e| BuildError::Tool {
            what: "cargo build".into(),
            reason: e.to_string(),
        })?;
        if !status.success() {
            return Err(BuildError::Compile {
                crate_name: self.package.clone(),
            });
        }
        let out = match out {
            Some(out) => out.to_path_buf(),
            None => own_target.join(format!("{}.wasm", self.package)),
        };
        wrap(
            &self.package,
            &release.join(format!("{}.wasm", self.library)),
            &out,
        )?;
        Ok(out)
    }
}

/// Wraps a guest's core module into a component at `out` (rewritten only
/// on change, so the file's modification time means something).
pub fn wrap(name: &str, core: &Path, out: &Path) -> Result<(), BuildError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    let bytes = std::fs::read(core).map_err(io(core))?;
    let not_a_guest = |reason: String| BuildError::NotAGuest {
        crate_name: name.to_string(),
        reason,
    };
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .map_err(|e| not_a_guest(format!("not a guest module: {e:#}")))?
        .validate(true)
        .encode()
        .map_err(|e| not_a_guest(format!("encoding the component: {e:#}")))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    if std::fs::read(out).ok().as_deref() != Some(component.as_slice()) {
        std::fs::write(out, &component).map_err(io(out))?;
    }
    Ok(())
}
