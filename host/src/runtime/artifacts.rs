//! The compiled-code cache: compiling a component takes tens of milliseconds,
//! loading its compiled artifact from disk takes about one.
//!
//! An entry is keyed by the component's sha256 and the engine's compatibility
//! hash (wasmtime version and compilation settings), so a changed component or
//! a different host never finds a foreign entry. Deserialising is `unsafe` in
//! wasmtime because it maps the bytes as executable code, so an entry is never
//! trusted blindly: each file carries a magic header and the sha256 of its
//! payload, checked before wasmtime sees it (wasmtime then checks its own
//! version header). An entry that fails any check is rebuilt. Writes go to a
//! temporary file renamed into place, so readers never see half an entry.
//!
//! The cache directory must be as trusted as the binary itself: whoever can
//! write there can write code the host runs.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"ESHOSTC1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Hex digest of the engine's compatibility hash.
    engine_key: String,
}

/// Feeds `Hash` output into sha256, giving a key that is stable across runs
/// (std's hashers promise no such thing).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read with `finalize`
    }
}

impl ArtifactCache {
    pub fn new(engine: &Engine, dir: impl Into<PathBuf>) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir: dir.into(),
            engine_key: hex::encode(hasher.0.finalize()),
        }
    }

    /// `$ESHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/eshost`, else `~/.cache/eshost`.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("ESHOST_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("eshost")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/eshost")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file for a component with this sha256 (hex).
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", &self.engine_key[..16]))
    }

    /// The compiled component: from the cache when a valid entry exists,
    /// otherwise compiled from `bytes` and stored.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let entry = self.entry_path(digest);
        match self.read(engine, &entry) {
            Ok(Some(component)) => {
                debug!(entry = %entry.display(), "compiled component from cache");
                return Ok(component);
            }
            Ok(None) => {}
            Err(reason) => warn!(entry = %entry.display(), %reason, "rebuilding cache entry"),
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.write(&entry, &component) {
            // The cache only saves time; a read-only or full disk is not fatal.
            warn!(entry = %entry.display(), error = %e, "could not write cache entry");
        }
        Ok(component)
    }

    /// `Ok(None)` when there is no entry; `Err` when there is a bad one.
    fn read(&self, engine: &Engine, entry: &Path) -> Result<Option<Component>, String> {
        let bytes = match std::fs::read(entry) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("unreadable: {e}")),
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not an eshost cache entry (bad header or truncated)".into());
        }
        let (checksum, payload) = bytes[MAGIC.len()..].split_at(32);
        if Sha256::digest(payload).as_slice() != checksum {
            return Err("checksum mismatch (corrupt or truncated)".into());
        }
        // SAFETY: the payload is byte for byte what `write` stored from
        // `Component::serialize` (the checksum above proves it), under a key
        // that includes this engine's compatibility hash; wasmtime also
        // refuses artifacts from another version or configuration.
        unsafe { Component::deserialize(engine, payload) }
            .map(Some)
            .map_err(|e| format!("wasmtime refused it: {e}"))
    }

    fn write(&self, entry: &Path, component: &Component) -> Result<(), String> {
        let payload = component.serialize().map_err(|e| e.to_string())?;
        let mut file = Vec::with_capacity(HEADER_LEN + payload.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        let tmp = temp_path(entry);
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, &file))
            .and_then(|()| std::fs::rename(&tmp, entry))
            .map_err(|e| e.to_string())
    }
}

/// A temporary name beside `entry` that no other writer uses, in this
/// process (threads load components at once) or another: the pid and a
/// counter. The entry then appears whole, by a rename.
fn temp_path(entry: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    entry.with_extension(format!("tmp{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_in_one_process_never_share_a_temporary_file() {
        let entry = Path::new("/cache/abc-0123.cwasm");
        let names: std::collections::HashSet<PathBuf> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..8).map(|_| s.spawn(|| temp_path(entry))).collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(names.len(), 8);
        assert!(names.iter().all(|n| n.parent() == entry.parent()));
    }
}
