//! The keys: the master key (from the operator, never stored), the data
//! keys it wraps (one per subject), and sealing with them. AES-256-GCM
//! with a random 96-bit nonce stored before the ciphertext and the tag;
//! HMAC-SHA256 for lookups. All of it is `ring`'s.

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;
use thiserror::Error;

/// The bytes of every key: 256 bits.
pub const KEY_LEN: usize = 32;

/// A key could not be read, or a sealed value did not open.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error(
        "a master key is {KEY_LEN} bytes in base64 (44 characters; `eshost personal new-key` makes one): {0}"
    )]
    BadMasterKey(String),
    #[error("cannot read the master key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{what} is wrapped by master key {id}, which is not configured (configured: {configured})"
    )]
    UnknownMasterKey {
        what: String,
        id: String,
        configured: String,
    },
    #[error("{0} does not open: damaged, or sealed under another key")]
    DoesNotOpen(String),
    #[error("a value is too long to seal")]
    TooLong,
    #[error("the system's random number generator failed")]
    NoRandomness,
}

/// Fills `bytes` from the system's randomness.
pub(crate) fn random(bytes: &mut [u8]) -> Result<(), KeyError> {
    SystemRandom::new()
        .fill(bytes)
        .map_err(|_| KeyError::NoRandomness)
}

/// An AES-256-GCM key.
pub(crate) struct SealingKey(LessSafeKey);

impl SealingKey {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte key is always accepted for AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        Self(LessSafeKey::new(unbound))
    }

    /// `plaintext` sealed: the nonce, the ciphertext and the tag.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let mut body = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| KeyError::TooLong)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + body.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// What [`seal`](Self::seal) sealed, if it opens with this key and `aad`.
    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>, KeyError> {
        let fail = || KeyError::DoesNotOpen(what.to_owned());
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN).ok_or_else(fail)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut body = body.to_vec();
        let plaintext = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| fail())?;
        let len = plaintext.len();
        body.truncate(len);
        Ok(body)
    }
}

/// A new random key's bytes.
pub(crate) fn new_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut bytes = [0u8; KEY_LEN];
    random(&mut bytes)?;
    Ok(bytes)
}

/// The operator's key, which wraps every other key. Never stored by
/// eshost; its id (the first 16 hex digits of its SHA-256) is.
pub struct MasterKey {
    id: String,
    key: SealingKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A key from its base64 text (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::BadMasterKey(e.to_string()))?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            KeyError::BadMasterKey(format!("this one is {} bytes", b.len()))
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        Ok(Self {
            id: hex::encode(&digest.as_ref()[..8]),
            key: SealingKey::new(&bytes),
        })
    }

    /// A key from a file that holds its base64 text.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_base64(&text)
    }

    /// A new random key, as base64 text.
    pub fn generate() -> Result<String, KeyError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(new_key()?))
    }

    /// The key's id, as stored beside what it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The master keys configured: the current one, which wraps every new
/// key, and previous ones, which still unwrap what they wrapped until a
/// rotation has rewrapped it.
#[derive(Debug)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// The current master key's id.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// `key` wrapped by the current master key, bound to `aad`.
    pub(crate) fn wrap(&self, key: &[u8; KEY_LEN], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.current.key.seal(key, aad)
    }

    /// A key `wrap` wrapped, under the master key `id`.
    pub(crate) fn unwrap(
        &self,
        wrapped: &[u8],
        id: &str,
        aad: &[u8],
        what: &str,
    ) -> Result<[u8; KEY_LEN], KeyError> {
        let master = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| KeyError::UnknownMasterKey {
                what: what.to_owned(),
                id: id.to_owned(),
                configured: std::iter::once(&self.current)
                    .chain(&self.previous)
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let bytes = master.key.open(wrapped, aad, what)?;
        bytes
            .try_into()
            .map_err(|_| KeyError::DoesNotOpen(what.to_owned()))
    }
}

/// A data subject's key, unwrapped.
pub(crate) struct DataKey(SealingKey);

impl DataKey {
    pub(crate) fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self(SealingKey::new(bytes))
    }

    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.0.seal(plaintext, aad)
    }

    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>, KeyError> {
        self.0.open(sealed, aad, what)
    }
}

/// A keyed hash (HMAC-SHA256) of the store's: the one that finds a
/// subject's row from their id, and the one that fingerprints commands.
pub(crate) struct HmacKey(ring::hmac::Key);

impl HmacKey {
    pub(crate) fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// The keyed hash of `parts`, one after the other.
    pub(crate) fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut context = ring::hmac::Context::with_key(&self.0);
        for part in parts {
            context.update(part);
        }
        context.sign().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_associated_data() {
        let key = DataKey::new(&new_key().unwrap());
        let sealed = key.seal(b"\"ann\"", b"psn_1/buyerId").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"ann"));
        assert_eq!(
            key.open(&sealed, b"psn_1/buyerId", "x").unwrap(),
            b"\"ann\""
        );
        assert!(key.open(&sealed, b"psn_2/buyerId", "x").is_err());
        let other = DataKey::new(&new_key().unwrap());
        assert!(other.open(&sealed, b"psn_1/buyerId", "x").is_err());
        assert!(key.open(&sealed[..10], b"psn_1/buyerId", "x").is_err());
        // Random nonces: the same value seals differently each time.
        assert_ne!(sealed, key.seal(b"\"ann\"", b"psn_1/buyerId").unwrap());
    }

    #[test]
    fn a_master_key_is_32_bytes_of_base64_and_unwraps_only_what_it_wrapped() {
        let text = MasterKey::generate().unwrap();
        let master = MasterKey::from_base64(&format!("{text}\n")).unwrap();
        assert_eq!(master.id().len(), 16);
        let err = MasterKey::from_base64("c2hvcnQ=").unwrap_err().to_string();
        assert!(err.contains("this one is 5 bytes"), "{err}");
        assert!(MasterKey::from_base64("not base64!").is_err());

        let old = Keyring::new(master, Vec::new());
        let data = new_key().unwrap();
        let wrapped = old.wrap(&data, b"psn_1").unwrap();
        let id = old.current_id().to_owned();
        assert_eq!(old.unwrap(&wrapped, &id, b"psn_1", "k").unwrap(), data);
        assert!(old.unwrap(&wrapped, &id, b"psn_2", "k").is_err());

        let rotated = Keyring::new(
            MasterKey::from_base64(&MasterKey::generate().unwrap()).unwrap(),
            vec![MasterKey::from_base64(&text).unwrap()],
        );
        assert_eq!(rotated.unwrap(&wrapped, &id, b"psn_1", "k").unwrap(), data);
        let alone = Keyring::new(rotated.current, Vec::new());
        let err = alone.unwrap(&wrapped, &id, b"psn_1", "k").unwrap_err();
        assert!(err.to_string().contains(&id), "{err}");
    }
}
