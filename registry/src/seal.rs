//! Sealed gossip: every UDP packet and TCP frame is authenticated and encrypted with the
//! cluster key (ChaCha20-Poly1305), so only agents holding a key of the [`Keyring`] can join
//! or read the catalog.
//!
//! Layout of a packet on the wire:
//! - insecure (dev) mode: `0x00 ‖ payload`;
//! - sealed: `0x01 ‖ nonce (12 random bytes) ‖ ciphertext ‖ Poly1305 tag (16)`, with the
//!   leading `0x01` as associated data. It is sealed with the primary key and opened with
//!   any installed key, so keys rotate without downtime.
//!
//! A sealed cluster drops unsealed packets and an insecure one drops sealed packets.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::TryRng as _;
use sha2::{Digest as _, Sha256};

/// First byte of an unsealed packet.
const TAG_PLAIN: u8 = 0x00;
/// First byte of a sealed packet.
const TAG_SEALED: u8 = 0x01;
const NONCE_LEN: usize = 12;
const MAC_LEN: usize = 16;
/// Bytes a sealed packet adds to its payload: the tag byte, the nonce and the MAC.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + MAC_LEN;
/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key could not be installed, chosen or removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is not valid base64: {0}")]
    Base64(String),
    #[error("key must be {KEY_LEN} bytes, got {0}; make one with `strata-agent keygen`")]
    Length(usize),
    #[error("key {0} is not installed; install it first")]
    NotInstalled(String),
    #[error("key {0} is the primary key; make another key primary before removing it")]
    RemovePrimary(String),
    #[error("the cluster runs without a keyring (insecure mode)")]
    Insecure,
}

/// Why a packet was dropped on open: each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum OpenError {
    /// Too short to hold a nonce and a MAC, or empty.
    #[error("truncated packet")]
    Truncated,
    /// The first byte is neither sealed nor plain.
    #[error("unknown packet format")]
    Malformed,
    /// No installed key authenticates it (wrong cluster key or tampered).
    #[error("no installed key opens the packet")]
    BadKey,
    /// A plain packet reached a sealed cluster.
    #[error("unsealed packet in a sealed cluster")]
    Unsealed,
    /// A sealed packet reached an insecure cluster.
    #[error("sealed packet in an insecure cluster")]
    UnexpectedSealed,
}

/// Why a packet could not be sealed.
#[derive(Debug, thiserror::Error)]
#[error("sealing failed: {0}")]
pub struct SealError(String);

/// One installed key.
#[derive(Clone)]
struct InstalledKey {
    bytes: [u8; KEY_LEN],
    cipher: ChaCha20Poly1305,
}

/// The cluster's keys: one primary that seals, any of them opens.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<InstalledKey>,
    primary: usize,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.info())
            .finish()
    }
}

/// What the API may show of a keyring: fingerprints, never keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringInfo {
    /// Fingerprint of the key that seals.
    pub primary: String,
    /// Fingerprints of every installed key, primary included, in install order.
    pub keys: Vec<String>,
}

/// Makes a new random cluster key, base64, for `strata-agent keygen`.
pub fn generate_key() -> Result<String, SealError> {
    let mut key = [0u8; KEY_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut key)
        .map_err(|e| SealError(format!("no OS randomness: {e}")))?;
    Ok(B64.encode(key))
}

/// Decodes a base64 key and checks its length.
fn decode_key(b64: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// First 8 bytes of SHA-256 of the key, hex: safe to show and log.
fn fingerprint(key: &[u8; KEY_LEN]) -> String {
    Sha256::digest(key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Keyring {
    /// A keyring with one key, which is primary.
    pub fn new(primary_b64: &str) -> Result<Self, KeyError> {
        let bytes = decode_key(primary_b64)?;
        Ok(Self {
            keys: vec![InstalledKey::new(bytes)],
            primary: 0,
        })
    }

    /// Adds a key that opens packets (idempotent); it seals only once made primary.
    pub fn install(&mut self, b64: &str) -> Result<(), KeyError> {
        let bytes = decode_key(b64)?;
        if self.position(&bytes).is_none() {
            self.keys.push(InstalledKey::new(bytes));
        }
        Ok(())
    }

    /// Makes an installed key the one that seals.
    pub fn use_primary(&mut self, b64: &str) -> Result<(), KeyError> {
        let bytes = decode_key(b64)?;
        let index = self
            .position(&bytes)
            .ok_or_else(|| KeyError::NotInstalled(fingerprint(&bytes)))?;
        self.primary = index;
        Ok(())
    }

    /// Removes a key that is not primary.
    pub fn remove(&mut self, b64: &str) -> Result<(), KeyError> {
        let bytes = decode_key(b64)?;
        let index = self
            .position(&bytes)
            .ok_or_else(|| KeyError::NotInstalled(fingerprint(&bytes)))?;
        if index == self.primary {
            return Err(KeyError::RemovePrimary(fingerprint(&bytes)));
        }
        self.keys.remove(index);
        if self.primary > index {
            self.primary -= 1;
        }
        Ok(())
    }

    /// Fingerprints of the installed keys and which one is primary.
    pub fn info(&self) -> KeyringInfo {
        KeyringInfo {
            primary: fingerprint(&self.keys[self.primary].bytes),
            keys: self.keys.iter().map(|k| fingerprint(&k.bytes)).collect(),
        }
    }

    /// The keys themselves (base64), primary first, for the agent to store its keyring so a
    /// rotation survives a restart. Never shown by the API.
    pub fn export(&self) -> (String, Vec<String>) {
        let primary = B64.encode(self.keys[self.primary].bytes);
        let keys = self.keys.iter().map(|k| B64.encode(k.bytes)).collect();
        (primary, keys)
    }

    fn position(&self, bytes: &[u8; KEY_LEN]) -> Option<usize> {
        self.keys.iter().position(|k| &k.bytes == bytes)
    }
}

impl InstalledKey {
    fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
            bytes,
        }
    }
}

/// Seals `payload` with the primary key, or frames it plain in insecure mode (`None`).
pub fn seal(keyring: Option<&Keyring>, payload: &[u8]) -> Result<Vec<u8>, SealError> {
    let Some(keyring) = keyring else {
        let mut out = Vec::with_capacity(payload.len() + 1);
        out.push(TAG_PLAIN);
        out.extend_from_slice(payload);
        return Ok(out);
    };
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| SealError(format!("no OS randomness: {e}")))?;
    let sealed = keyring.keys[keyring.primary]
        .cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: payload,
                aad: &[TAG_SEALED],
            },
        )
        .map_err(|e| SealError(e.to_string()))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(TAG_SEALED);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a packet: pure, total on arbitrary bytes (fuzz target), never panics.
pub fn open(keyring: Option<&Keyring>, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
    let (&tag, rest) = packet.split_first().ok_or(OpenError::Truncated)?;
    match (tag, keyring) {
        (TAG_PLAIN, None) => Ok(rest.to_vec()),
        (TAG_PLAIN, Some(_)) => Err(OpenError::Unsealed),
        (TAG_SEALED, None) => Err(OpenError::UnexpectedSealed),
        (TAG_SEALED, Some(keyring)) => {
            if rest.len() < NONCE_LEN + MAC_LEN {
                return Err(OpenError::Truncated);
            }
            let (nonce, body) = rest.split_at(NONCE_LEN);
            let nonce = Nonce::from_slice(nonce);
            keyring
                .keys
                .iter()
                .find_map(|key| {
                    key.cipher
                        .decrypt(
                            nonce,
                            Payload {
                                msg: body,
                                aad: &[TAG_SEALED],
                            },
                        )
                        .ok()
                })
                .ok_or(OpenError::BadKey)
        }
        _ => Err(OpenError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        generate_key().unwrap()
    }

    #[test]
    fn round_trip_and_wrong_key() {
        let ring = Keyring::new(&key()).unwrap();
        let sealed = seal(Some(&ring), b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(open(Some(&ring), &sealed).unwrap(), b"hello");
        let other = Keyring::new(&key()).unwrap();
        assert_eq!(open(Some(&other), &sealed), Err(OpenError::BadKey));
    }

    #[test]
    fn drops_truncated_garbage_and_mixed_modes() {
        let ring = Keyring::new(&key()).unwrap();
        let sealed = seal(Some(&ring), b"payload").unwrap();
        assert_eq!(open(Some(&ring), &[]), Err(OpenError::Truncated));
        assert_eq!(open(Some(&ring), &sealed[..20]), Err(OpenError::Truncated));
        assert_eq!(
            open(Some(&ring), &sealed[..sealed.len() - 1]),
            Err(OpenError::BadKey)
        );
        assert_eq!(open(Some(&ring), &[7, 1, 2, 3]), Err(OpenError::Malformed));
        let plain = seal(None, b"payload").unwrap();
        assert_eq!(open(Some(&ring), &plain), Err(OpenError::Unsealed));
        assert_eq!(open(None, &sealed), Err(OpenError::UnexpectedSealed));
        assert_eq!(open(None, &plain).unwrap(), b"payload");
        let mut flipped = sealed.clone();
        flipped[15] ^= 1;
        assert_eq!(open(Some(&ring), &flipped), Err(OpenError::BadKey));
    }

    #[test]
    fn open_never_panics_on_arbitrary_bytes() {
        let ring = Keyring::new(&key()).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert!(open(Some(&ring), &bytes).is_err());
            let _ = open(None, &bytes);
        }
    }

    #[test]
    fn rotation_rules() {
        let (a, b) = (key(), key());
        let mut ring = Keyring::new(&a).unwrap();
        let sealed_a = seal(Some(&ring), b"x").unwrap();
        assert!(matches!(
            ring.use_primary(&b),
            Err(KeyError::NotInstalled(_))
        ));
        ring.install(&b).unwrap();
        ring.install(&b).unwrap();
        assert_eq!(ring.info().keys.len(), 2);
        ring.use_primary(&b).unwrap();
        assert!(matches!(ring.remove(&b), Err(KeyError::RemovePrimary(_))));
        let sealed_b = seal(Some(&ring), b"y").unwrap();
        let only_a = Keyring::new(&a).unwrap();
        assert_eq!(open(Some(&only_a), &sealed_b), Err(OpenError::BadKey));
        assert_eq!(open(Some(&ring), &sealed_a).unwrap(), b"x");
        ring.remove(&a).unwrap();
        assert_eq!(open(Some(&ring), &sealed_a), Err(OpenError::BadKey));
        assert_eq!(ring.info().keys, vec![ring.info().primary]);
        assert!(matches!(Keyring::new("AAAA"), Err(KeyError::Length(3))));
        assert!(matches!(Keyring::new("!!"), Err(KeyError::Base64(_))));
    }
}
