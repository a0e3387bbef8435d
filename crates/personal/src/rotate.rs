//! Rotating the master key: every key wrapped by another master key is
//! unwrapped with it (a previous key of the keyring) and wrapped again by
//! the current one, a page at a time, each page one transaction. An
//! interrupted rotation is run again and goes on where it stopped.

use crate::store::PersonalStore;
use eshost_store::StoreError;
use eshost_store::subjects::WrappedKey;

/// Subjects rewrapped per transaction.
const PAGE: u64 = 500;

/// What a rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Subjects' keys rewrapped.
    pub subjects: u64,
    /// The store's own keys rewrapped.
    pub store_keys: u64,
}

fn personal(e: impl std::fmt::Display) -> StoreError {
    StoreError::PersonalData(e.to_string())
}

/// Rewraps every key in `store` that its current master key did not wrap.
/// Fails, with nothing of that page written, on a key none of its master
/// keys opens.
pub async fn rotate(store: &PersonalStore) -> Result<Rotation, StoreError> {
    let keyring = store.keyring();
    let subjects = store.inner().subjects();
    let current = keyring.current_id().to_owned();
    let mut done = Rotation::default();
    let mut kept = Vec::new();
    for (name, key) in subjects.kept_keys().await? {
        if key.master_key_id == current {
            continue;
        }
        let what = format!("the store's {name} key");
        let bytes = keyring
            .unwrap(&key.wrapped_key, &key.master_key_id, name.as_bytes(), &what)
            .map_err(personal)?;
        let wrapped_key = keyring.wrap(&bytes, name.as_bytes()).map_err(personal)?;
        kept.push((
            name,
            WrappedKey {
                wrapped_key,
                master_key_id: current.clone(),
            },
        ));
    }
    if !kept.is_empty() {
        done.store_keys = subjects.rewrap(&[], &kept).await?;
    }
    let mut after = String::new();
    loop {
        let mut page = subjects.wrapped_by_others(&current, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.pseudonym.clone();
        for row in &mut page {
            let what = format!("the key of {}", row.pseudonym);
            let aad = row.pseudonym.as_bytes();
            let bytes = keyring
                .unwrap(&row.wrapped_key, &row.master_key_id, aad, &what)
                .map_err(personal)?;
            row.wrapped_key = keyring.wrap(&bytes, aad).map_err(personal)?;
            row.master_key_id = current.clone();
        }
        done.subjects += subjects.rewrap(&page, &[]).await?;
    }
    Ok(done)
}
