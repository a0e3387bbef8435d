//! The master key of personal data (decision record 0056): where it comes
//! from, and the store opened with it. With a key, the store encrypts what
//! the guests declare as personal data and decrypts it for every reader.
//! On the embedded store a key is made beside the database file the first
//! time a guest that declares personal data is loaded, so a newcomer needs
//! no setup; elsewhere the operator configures one.

use anyhow::{Context, Result, bail};
use clap::Args;
use eshost_personal::{Keyring, MasterKey, PersonalStore};
use eshost_store::EventStore;
use eshost_wasm::Modules;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The master key's settings.
#[derive(Debug, Args)]
#[command(next_help_heading = "Personal data (global)")]
pub struct KeyArgs {
    /// The master key that wraps the keys of personal data: a file holding
    /// 32 random bytes in base64 (`eshost personal new-key --out FILE`
    /// writes one) [default: for sqlite://PATH, PATH.key, made on first
    /// need; for PostgreSQL, none: declared personal data is then stored
    /// as written, with a warning].
    #[arg(
        long,
        env = "ESHOST_MASTER_KEY_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub master_key_file: Option<PathBuf>,

    /// The master key itself, in base64, instead of a file. Prefer the
    /// variable to the flag: a flag shows in the process list.
    #[arg(
        long,
        env = "ESHOST_MASTER_KEY",
        global = true,
        hide_env_values = true,
        value_name = "BASE64",
        conflicts_with = "master_key_file"
    )]
    pub master_key: Option<String>,

    /// Master keys used before the current one, still read until
    /// `eshost personal rotate` has rewrapped what they wrapped; files,
    /// comma-separated.
    #[arg(
        long,
        env = "ESHOST_PREVIOUS_MASTER_KEY_FILES",
        global = true,
        value_name = "FILE,...",
        value_delimiter = ','
    )]
    pub previous_master_key_files: Vec<PathBuf>,
}

impl KeyArgs {
    /// The configured keys; on SQLite with none configured, the key
    /// beside the database if there is one. `None` when there is no key.
    pub fn keyring(&self, database_url: &str) -> Result<Option<Keyring>> {
        let current = match (&self.master_key, &self.master_key_file) {
            (Some(text), _) => Some(MasterKey::from_base64(text).context("ESHOST_MASTER_KEY")?),
            (None, Some(file)) => Some(MasterKey::from_file(file)?),
            (None, None) => match default_key_file(database_url) {
                Some(file) if file.exists() => Some(MasterKey::from_file(&file)?),
                _ => None,
            },
        };
        let Some(current) = current else {
            if !self.previous_master_key_files.is_empty() {
                bail!(
                    "previous master keys are given but no current one: set ESHOST_MASTER_KEY_FILE"
                );
            }
            return Ok(None);
        };
        let previous = self
            .previous_master_key_files
            .iter()
            .map(|file| MasterKey::from_file(file))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Keyring::new(current, previous)))
    }

    /// The event store `database_url` names, encrypting personal data when
    /// there is a master key. `modules`, when given, are the guests this
    /// process runs: on SQLite, one that declares personal data has a key
    /// made for it.
    pub async fn open_store(
        &self,
        database_url: &str,
        modules: Option<&Modules>,
    ) -> Result<Arc<dyn EventStore>> {
        let declares = modules.is_some_and(|m| m.iter().any(|c| !c.personal.is_empty()));
        let store = eshost_store::open(database_url).await?;
        let keyring = match (self.keyring(database_url)?, default_key_file(database_url)) {
            (Some(keyring), _) => Some(keyring),
            (None, Some(file)) if declares => Some(first_key(store.as_ref(), &file).await?),
            (None, _) => None,
        };
        Ok(match keyring {
            Some(keyring) => {
                Arc::new(PersonalStore::open(store, keyring, Default::default()).await?)
            }
            None => store,
        })
    }
}

/// The key made beside a SQLite database that holds no personal data
/// yet. One that does was encrypted under a key that is missing now:
/// making another would open none of it.
async fn first_key(store: &dyn EventStore, file: &Path) -> Result<Keyring> {
    if let Some((_, kept)) = store.subjects().kept_keys().await?.into_iter().next() {
        // The environment failed, as with a key that does not open.
        return Err(eshost_store::StoreError::PersonalData(format!(
            "the store's personal data is under master key {}, and its key file {} is missing: put it back, or name the key with ESHOST_MASTER_KEY_FILE",
            kept.master_key_id,
            file.display()
        ))
        .into());
    }
    Ok(Keyring::new(make_key_file(file)?, Vec::new()))
}

/// `PATH.key` for `sqlite://PATH`; none for another store.
fn default_key_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(format!("{path}.key")))
}

/// A new master key in `file`, readable by its owner only.
fn make_key_file(file: &Path) -> Result<MasterKey> {
    let text = MasterKey::generate()?;
    write_new_key(file, &text)?;
    tracing::info!(
        file = %file.display(),
        "made a master key for personal data beside the database; keep it apart from the database's backups"
    );
    Ok(MasterKey::from_base64(&text)?)
}

/// Writes `text` to a file that must not exist yet, mode 0600.
pub fn write_new_key(file: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options
        .open(file)
        .with_context(|| format!("{}: cannot create the key file", file.display()))?;
    writeln!(out, "{text}").with_context(|| format!("{}: cannot write", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_sits_beside_a_sqlite_file_only() {
        assert_eq!(
            default_key_file("sqlite://eshost.db"),
            Some(PathBuf::from("eshost.db.key"))
        );
        assert_eq!(
            default_key_file("sqlite:/var/lib/e.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/e.db.key"))
        );
        assert_eq!(default_key_file("sqlite::memory:"), None);
        assert_eq!(default_key_file("postgres://u@h/db"), None);
    }
}
