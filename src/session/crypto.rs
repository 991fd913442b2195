//! AES-256-GCM keyring for tokens at rest. Each ciphertext names the key that sealed it (`kid`,
//! the first 8 hex digits of the key's SHA-256), so keys can be rotated: new tokens are sealed
//! with the current key and old ones still open with the previous keys.

use crate::config::Secret;
use crate::store::Sealed;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Associated data binds ciphertexts to their purpose.
const AAD: &[u8] = b"sessiongate/token/v1";

pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key must be base64 of exactly 32 bytes")]
    BadKey,
    #[error("no key with id {0} in the keyring")]
    UnknownKey(String),
    #[error("ciphertext does not authenticate")]
    Corrupt,
}

/// Decodes a base64 (standard or URL-safe) 32-byte key.
pub fn decode_key(secret: &Secret) -> Result<[u8; 32], CryptoError> {
    let text = std::str::from_utf8(secret.expose()).map_err(|_| CryptoError::BadKey)?.trim();
    let bytes = B64
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .map_err(|_| CryptoError::BadKey)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| CryptoError::BadKey)
}

/// A fresh random key, base64-encoded (what `sessiongate keygen` prints).
pub fn generate_key() -> String {
    let key: [u8; 32] = rand::random();
    B64.encode(key)
}

pub fn key_id(key: &[u8; 32]) -> String {
    hex(&Sha256::digest(key)[..4])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Keyring {
    /// `current` seals; `previous` only open.
    pub fn new(current: [u8; 32], previous: &[[u8; 32]]) -> Keyring {
        let keys = std::iter::once(&current).chain(previous).map(|k| (key_id(k), Aes256Gcm::new(k.into()))).collect();
        Keyring { keys }
    }

    pub fn current_kid(&self) -> &str {
        &self.keys[0].0
    }

    /// Ids of every key held, the current one first.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Whether a ciphertext sealed with key `kid` can be opened here.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == kid)
    }

    pub fn seal(&self, plaintext: &str) -> Sealed {
        let (kid, cipher) = &self.keys[0];
        let nonce: [u8; 12] = rand::random();
        // Encryption with a valid key and a 12-byte nonce cannot fail for inputs of this size.
        let ct =
            cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: AAD }).unwrap_or_default();
        Sealed { kid: kid.clone(), nonce: B64.encode(nonce), ct: B64.encode(ct) }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<String, CryptoError> {
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == sealed.kid)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.kid.clone()))?;
        let nonce = B64.decode(&sealed.nonce).map_err(|_| CryptoError::Corrupt)?;
        let ct = B64.decode(&sealed.ct).map_err(|_| CryptoError::Corrupt)?;
        let nonce = <[u8; 12]>::try_from(nonce.as_slice()).map_err(|_| CryptoError::Corrupt)?;
        let pt =
            cipher.decrypt(&Nonce::from(nonce), Payload { msg: &ct, aad: AAD }).map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(pt).map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let sealed_old = Keyring::new(old, &[]).seal("tok");
        assert!(!sealed_old.ct.contains("tok"));
        let ring = Keyring::new(new, &[old]);
        assert_eq!(ring.open(&sealed_old).expect("previous key opens"), "tok");
        let sealed_new = ring.seal("tok2");
        assert_eq!(sealed_new.kid, key_id(&new));
        assert_eq!(ring.open(&sealed_new).expect("current key opens"), "tok2");
        assert!(matches!(Keyring::new(old, &[]).open(&sealed_new), Err(CryptoError::UnknownKey(_))));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::new([3u8; 32], &[]);
        let mut s = ring.seal("secret");
        let mut ct = B64.decode(&s.ct).expect("b64");
        ct[0] ^= 1;
        s.ct = B64.encode(ct);
        assert!(matches!(ring.open(&s), Err(CryptoError::Corrupt)));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(decode_key(&Secret::new(generate_key())).is_ok());
        assert!(decode_key(&Secret::new(B64.encode([0u8; 16]))).is_err());
        assert!(decode_key(&Secret::new("not base64!")).is_err());
    }
}
