//! Projections' views: what the store records of a projection, and one
//! change a projection guest makes to its view.

use crate::json::JsonText;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// The longest key a view stores. A guest's key may be longer (one built
/// from an aggregate id of the full 1,024 bytes and a prefix, say): it is
/// stored under [`stored_key`].
pub const MAX_KEY_BYTES: usize = 1024;

/// How much of a key over [`MAX_KEY_BYTES`] its stored form keeps: room
/// for `#` and 64 hex digits after it.
const KEPT_BYTES: usize = MAX_KEY_BYTES - 1 - 64;

/// The key a document is stored and looked up under. A key up to
/// [`MAX_KEY_BYTES`] is itself; a longer one is its first 959 bytes (cut
/// at a character boundary), `#`, and the SHA-256 of the whole key in
/// lowercase hex. So every key a guest can make is storable, no valid
/// command can stop a projection, and a reader finds a long key's
/// document by the same key the guest wrote.
pub fn stored_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES {
        return Cow::Borrowed(key);
    }
    let mut kept = KEPT_BYTES;
    while !key.is_char_boundary(kept) {
        kept -= 1;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut stored = String::with_capacity(MAX_KEY_BYTES);
    stored.push_str(&key[..kept]);
    stored.push('#');
    for byte in digest {
        stored.push_str(&format!("{byte:02x}"));
    }
    Cow::Owned(stored)
}

/// What the store knows of a projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionRecord {
    pub name: String,
    /// The guest version that last ran it.
    pub version: String,
    /// `sha256:` and the component file's digest.
    pub digest: String,
    /// The live view's generation: 1, then one more per rebuild.
    pub generation: i64,
    /// The position of the last event the live view includes.
    pub position: i64,
    /// `ok`, or `failed` with the error.
    pub status: String,
    /// Why it stopped: the event it stopped at and the guest's error.
    pub error: Option<String>,
    /// RFC 3339, UTC: when the status was last set.
    pub updated_at: String,
}

/// A projection's status when it runs.
pub const STATUS_OK: &str = "ok";
/// A projection's status when an event stopped it.
pub const STATUS_FAILED: &str = "failed";

/// One change to a view: the document under `key` becomes `body`, or goes
/// when `body` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentChange {
    pub key: String,
    pub body: Option<JsonText>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_the_limit_is_stored_cut_and_hashed() {
        let short = "item:s1";
        assert_eq!(stored_key(short), short);
        let at_limit = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(stored_key(&at_limit), at_limit);
        let long = format!("item:{}", "é".repeat(MAX_KEY_BYTES / 2));
        let stored = stored_key(&long);
        assert!(stored.len() <= MAX_KEY_BYTES, "{}", stored.len());
        let (kept, hash) = stored.rsplit_once('#').unwrap();
        assert!(long.starts_with(kept));
        assert_eq!(hash.len(), 64);
        // Another long key with the same first bytes is stored apart.
        let other = format!("{long}x");
        assert_ne!(stored_key(&other), stored);
        assert_eq!(stored_key(&long), stored, "the same key, the same place");
    }
}
