//! The compiled-code cache: compiling a component takes from tens of
//! milliseconds (a Rust guest) to tens of seconds (a 12 MB JavaScript
//! one); loading its compiled artifact takes about a millisecond.
//!
//! An entry is wasmtime's own serialised artifact, keyed by the
//! component's sha256 and the engine's compatibility hash (wasmtime version
//! and compilation settings), so a changed component or a different host
//! never finds a foreign entry. It is memory-mapped, not read: a warm start
//! costs the same whatever the component's size.
//!
//! Two small records spare a warm start from hashing anything:
//! - `sources/`: for each component file (by path), the sha256 it had and
//!   the file's identity then (device, inode, size, mtime, ctime). While the
//!   identity is unchanged, so is the file: any write through the file
//!   system moves its mtime and ctime, and a file renamed into place is
//!   another inode. Otherwise the file is read and hashed again.
//! - `ENTRY.sum`: the entry's sha256, and its identity when that sha256
//!   was last checked. Deserialising is `unsafe` in wasmtime because it
//!   maps the bytes as executable code, so an entry whose identity moved
//!   since its check (rewritten, truncated, replaced) is read and checked
//!   in full before wasmtime sees it; one that fails is rebuilt. wasmtime
//!   then checks its own version header.
//!
//! Writes go to a temporary file renamed into place, so readers never see
//! half an entry. What this does not guard against: a change below the
//! file system (a failing disk) after the check, as for the eshost binary
//! itself; and whoever can write to the cache directory can write code the
//! host runs, so it must be as trusted as the binary.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

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

/// What tells one version of a file from another without reading it:
/// device, inode, size, mtime and ctime (nanoseconds). `None` where the
/// platform does not give them; then files are always hashed.
fn identity(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(format!(
            "{} {} {} {}.{} {}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// A record of `sha256 identity`: a file's digest, and the file's identity
/// when the digest was taken.
fn read_record(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (digest, identity) = text.trim_end().split_once(' ')?;
    Some((digest.to_string(), identity.to_string()))
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

    /// Where the digest of the component file at `path` is remembered.
    fn source_record(&self, path: &Path) -> PathBuf {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let key = Sha256::digest(path.as_os_str().as_encoded_bytes());
        self.dir
            .join("sources")
            .join(format!("{}.sum", hex::encode(&key[..16])))
    }

    /// The sha256 (hex) of the component file at `path`, from its record
    /// while the file is unchanged, else by reading it (then also its
    /// bytes, which the caller needs to compile it).
    pub fn digest_of(&self, path: &Path) -> std::io::Result<(String, Option<Vec<u8>>)> {
        let record = self.source_record(path);
        let now = identity(path);
        if let (Some(now), Some((digest, then))) = (&now, read_record(&record))
            && *now == then
        {
            return Ok((digest, None));
        }
        let bytes = std::fs::read(path)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        // Taken before the read: a write during it leaves the record stale,
        // never wrong.
        if let Some(now) = now
            && let Err(e) = write_atomically(&record, format!("{digest} {now}").as_bytes())
        {
            debug!(record = %record.display(), error = %e, "could not remember a component's digest");
        }
        Ok((digest, Some(bytes)))
    }

    /// The compiled component: from the cache when a valid entry exists,
    /// otherwise compiled from `bytes` (read from `path` if not given) and
    /// stored.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        path: &Path,
        bytes: Option<Vec<u8>>,
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
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => std::fs::read(path)?,
        };
        let component = Component::new(engine, &bytes)?;
        if let Err(e) = self.write(&entry, &component) {
            // The cache only saves time; a read-only or full disk is not fatal.
            warn!(entry = %entry.display(), error = %e, "could not write cache entry");
        }
        Ok(component)
    }

    /// `Ok(None)` when there is no entry; `Err` when there is a bad one.
    fn read(&self, engine: &Engine, entry: &Path) -> Result<Option<Component>, String> {
        let Some(now) = identity(entry).or_else(|| entry.exists().then(String::new)) else {
            return Ok(None);
        };
        let sum = sum_path(entry);
        let (checksum, checked) = read_record(&sum)
            .ok_or("no checksum beside it (written by another version, or cut short)")?;
        if now.is_empty() || now != checked {
            // Moved since its check: read it all and check again.
            let bytes = std::fs::read(entry).map_err(|e| format!("unreadable: {e}"))?;
            if hex::encode(Sha256::digest(&bytes)) != checksum {
                return Err("checksum mismatch (corrupt, truncated or replaced)".into());
            }
            if !now.is_empty() {
                let _ = write_atomically(&sum, format!("{checksum} {now}").as_bytes());
            }
        }
        // SAFETY: the file is byte for byte what `write` stored from
        // `Component::serialize`: its checksum matched when its identity was
        // what it is now, and any change through the file system would have
        // moved that identity (see the module doc for what is trusted). Its
        // key includes this engine's compatibility hash, and wasmtime also
        // refuses artifacts from another version or configuration.
        unsafe { Component::deserialize_file(engine, entry) }
            .map(Some)
            .map_err(|e| format!("wasmtime refused it: {e}"))
    }

    fn write(&self, entry: &Path, component: &Component) -> Result<(), String> {
        let payload = component.serialize().map_err(|e| e.to_string())?;
        let checksum = hex::encode(Sha256::digest(&payload));
        write_atomically(entry, &payload).map_err(|e| e.to_string())?;
        // Checked as written: its identity now is the one to trust.
        let now = identity(entry).unwrap_or_default();
        write_atomically(&sum_path(entry), format!("{checksum} {now}").as_bytes())
            .map_err(|e| e.to_string())
    }
}

/// The checksum record beside an entry.
fn sum_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(".sum");
    PathBuf::from(name)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into
/// place: readers see the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path))
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
