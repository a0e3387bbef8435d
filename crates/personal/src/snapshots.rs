//! Snapshots of aggregates that declare personal data, sealed under the
//! store's snapshot key (decision record 0056). A snapshot is the guest's
//! state, and a state may hold a subject's data in plaintext (the flash
//! sale's list of buyers). Every forget replaces the snapshot key, in the
//! transaction that deletes the subject's row, so a snapshot written before
//! it, anywhere, no longer opens: not the forgetting host's, and not one a
//! host that has not yet read the erasure saves from a state it cached.
//! Such snapshots read as none, and their streams are replayed from their
//! events, where the subject reads as forgotten.
//!
//! A sealed snapshot is [`MAGIC`], the 8-byte id of the key it was sealed
//! under, and the AES-256-GCM sealing of the guest's bytes, bound to the
//! stream, the component and the version.

use crate::keys::{DataKey, KEY_LEN, KeyError, Keyring, new_key};
use eshost_core::StreamId;
use eshost_store::subjects::WrappedKey;
use ring::digest::{SHA256, digest};
use std::time::Instant;

/// The name of the store's snapshot key among its kept keys.
pub(crate) const SNAPSHOT_KEY: &str = "snapshot";

/// What a sealed snapshot starts with.
pub const MAGIC: &[u8; 16] = b"eshost-snap-v1\0\0";

/// The id of a snapshot key: from the key itself, so a rotation of the
/// master key (which rewraps it) keeps every snapshot readable.
pub(crate) type KeyId = [u8; 8];

/// The store's snapshot key, unwrapped.
pub(crate) struct SnapshotKey {
    pub(crate) id: KeyId,
    key: DataKey,
    pub(crate) read_at: Instant,
}

impl SnapshotKey {
    pub(crate) fn new(bytes: &[u8; KEY_LEN]) -> Self {
        let hash = digest(
            &SHA256,
            &[b"eshost snapshot key\0".as_slice(), bytes].concat(),
        );
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash.as_ref()[..8]);
        Self {
            id,
            key: DataKey::new(bytes),
            read_at: Instant::now(),
        }
    }

    /// A new key, and it wrapped by the current master key.
    pub(crate) fn generate(keyring: &Keyring) -> Result<(Self, WrappedKey), KeyError> {
        let bytes = new_key()?;
        let wrapped = WrappedKey {
            wrapped_key: keyring.wrap(&bytes, SNAPSHOT_KEY.as_bytes())?,
            master_key_id: keyring.current_id().to_owned(),
        };
        Ok((Self::new(&bytes), wrapped))
    }

    /// A kept key, unwrapped.
    pub(crate) fn unwrap(keyring: &Keyring, kept: &WrappedKey) -> Result<Self, KeyError> {
        let bytes = keyring.unwrap(
            &kept.wrapped_key,
            &kept.master_key_id,
            SNAPSHOT_KEY.as_bytes(),
            "the store's snapshot key",
        )?;
        Ok(Self::new(&bytes))
    }

    /// `state` sealed.
    pub(crate) fn seal(
        &self,
        stream: &StreamId,
        digest: &str,
        version: u64,
        state: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let sealed = self.key.seal(state, &associated(stream, digest, version))?;
        Ok([MAGIC.as_slice(), &self.id, &sealed].concat())
    }

    /// A sealed snapshot's state, if this key sealed it for this place.
    pub(crate) fn open(
        &self,
        stream: &StreamId,
        digest: &str,
        version: u64,
        stored: &[u8],
    ) -> Option<Vec<u8>> {
        let (id, sealed) = sealed_parts(stored)?;
        if id != self.id {
            return None;
        }
        let what = format!("the snapshot of {stream}");
        self.key
            .open(sealed, &associated(stream, digest, version), &what)
            .ok()
    }
}

/// The key id and the sealed bytes of a sealed snapshot; `None` for one
/// stored as the guest wrote it.
pub(crate) fn sealed_parts(stored: &[u8]) -> Option<(KeyId, &[u8])> {
    let rest = stored.strip_prefix(MAGIC.as_slice())?;
    let (id, sealed) = rest.split_first_chunk::<8>()?;
    Some((*id, sealed))
}

/// What a snapshot's sealing is bound to: moved to another stream,
/// component or version, it does not open.
fn associated(stream: &StreamId, digest: &str, version: u64) -> Vec<u8> {
    format!("{}\0{}\0{digest}\0{version}", stream.aggregate, stream.id).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_snapshot_opens_only_with_its_key_in_its_place() {
        let key = SnapshotKey::new(&new_key().unwrap());
        let stream = StreamId::new("Item", "s1");
        let sealed = key.seal(&stream, "d1", 3, b"buyers: ann").unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(3).any(|w| w == b"ann"));
        assert_eq!(
            key.open(&stream, "d1", 3, &sealed).as_deref(),
            Some(&b"buyers: ann"[..])
        );
        assert_eq!(key.open(&stream, "d1", 4, &sealed), None);
        assert_eq!(
            key.open(&StreamId::new("Item", "s2"), "d1", 3, &sealed),
            None
        );
        let other = SnapshotKey::new(&new_key().unwrap());
        assert_eq!(other.open(&stream, "d1", 3, &sealed), None);
        assert_eq!(sealed_parts(b"plain state"), None);
    }
}
