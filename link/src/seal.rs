//! Secrets kept in the database, sealed with a key kept outside it.
//!
//! Webhook secrets must be recoverable (each request is signed with one),
//! so they cannot be hashed like passwords. They are sealed with
//! ChaCha20-Poly1305 under a key read from a file (`alerts.webhook_key_file`)
//! that lives with the service, not in the database: a copy of the
//! database, a backup or a read-only SQL account reveals no secret. Each
//! sealed value is bound to its row (the associated data), so a sealed
//! secret copied onto another row does not open.

use crate::secret::{Secret, SecretError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

const NONCE_LEN: usize = 12;
/// Fewest characters in a key file: 32 (e.g. `openssl rand -hex 32`).
pub const MIN_KEY_CHARS: usize = 32;

/// The sealing key. `Debug` prints `***`.
#[derive(Clone)]
pub struct SealKey(Key);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(***)")
    }
}

/// A sealed value that does not open: another key, another row, or
/// tampered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealError;

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the sealed secret does not open with this key (another key, or another row's)")
    }
}

impl std::error::Error for SealError {}

impl SealKey {
    /// The key from a file's first line: at least [`MIN_KEY_CHARS`]
    /// characters of high-entropy text, taken through SHA-256.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SealKey, SecretError> {
        let path = path.as_ref();
        let line = Secret::from_file(path)?;
        if line.expose().len() < MIN_KEY_CHARS {
            return Err(SecretError::Read {
                path: path.to_owned(),
                detail: format!(
                    "a sealing key needs at least {MIN_KEY_CHARS} characters (openssl rand -hex 32)"
                ),
            });
        }
        Ok(SealKey::from_text(line.expose()))
    }

    /// The key from text (tests; [`SealKey::from_file`] otherwise).
    pub fn from_text(text: &str) -> SealKey {
        SealKey(Sha256::digest(text.as_bytes()))
    }

    /// `plain` sealed for `context` (the row it belongs to): a random nonce
    /// followed by the ciphertext and its tag.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(&self.0);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            // Only a plaintext beyond 256 GiB can fail: none is that large.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SealKey::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map_err(|_| SealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_row() {
        let key = SealKey::from_text("0123456789abcdef0123456789abcdef");
        let sealed = key.seal(b"webhook secret", b"webhook 7");
        assert!(
            !sealed.windows(14).any(|w| w == b"webhook secret"),
            "not in clear"
        );
        assert_eq!(
            key.open(&sealed, b"webhook 7").expect("opens"),
            b"webhook secret"
        );
        assert_eq!(
            key.open(&sealed, b"webhook 8"),
            Err(SealError),
            "another row"
        );
        let other = SealKey::from_text("another key, also 32 characters long");
        assert_eq!(
            other.open(&sealed, b"webhook 7"),
            Err(SealError),
            "another key"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            key.open(&tampered, b"webhook 7"),
            Err(SealError),
            "tampered"
        );
        assert_ne!(
            key.seal(b"x", b"c"),
            key.seal(b"x", b"c"),
            "a fresh nonce each time"
        );
        assert_eq!(format!("{key:?}"), "SealKey(***)");
    }
}
