//! Sealing AWS secret access keys: SigV4 checks a signature with the secret itself,
//! so unlike a client's secret it cannot be kept as a hash. It is kept sealed with
//! XChaCha20-Poly1305 under a 32-byte key that is never in the store: `auth.secret_key`
//! or `HOPPER_SECRET_KEY`, or on SQLite a key file beside the database, so a copy
//! of the store alone (a backup, a dump) opens no secret.
//!
//! Never logs a key or an opened secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::domain::AccessKeyId;

/// Bytes of a key.
pub const SECRET_KEY_LEN: usize = 32;
/// Bytes of a nonce: XChaCha's 192 bits are enough to draw each one at random.
const NONCE_LEN: usize = 24;
/// The first byte of a sealed secret: the format, so a later one can be told apart.
const FORMAT: u8 = 1;
/// The suffix of the key file beside a SQLite database.
const KEY_FILE_SUFFIX: &str = ".secret-key";

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// Not base64.
    #[error("is not base64 (make one with `openssl rand -base64 32`)")]
    NotBase64,
    /// Base64 of another length than [`SECRET_KEY_LEN`] bytes.
    #[error("must be the base64 of {SECRET_KEY_LEN} bytes, and it decodes to {0} bytes (make one with `openssl rand -base64 32`)")]
    WrongLength(usize),
}

/// The key AWS secrets are sealed under.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// The key `text` holds: the base64 (standard alphabet, padded or not) of
    /// [`SECRET_KEY_LEN`] bytes, surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<SecretKey, SecretKeyError> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| SecretKeyError::NotBase64)?;
        let bytes: [u8; SECRET_KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SecretKeyError::WrongLength(bytes.len()))?;
        Ok(SecretKey::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; SECRET_KEY_LEN]) -> SecretKey {
        SecretKey {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// `secret` sealed for the key `access_key_id`: format byte, random nonce, then
    /// the ciphertext with its tag. The id is authenticated with it, so the sealed
    /// bytes open for that key only.
    pub fn seal(&self, access_key_id: &AccessKeyId, secret: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: access_key_id.as_str().as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The secret `sealed` holds, if it was sealed under this key for `access_key_id`.
    pub fn open(&self, access_key_id: &AccessKeyId, sealed: &[u8]) -> Option<String> {
        let (&format, rest) = sealed.split_first()?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let payload = Payload {
            msg: ciphertext,
            aad: access_key_id.as_str().as_bytes(),
        };
        let secret = self.cipher.decrypt(&XNonce::from(nonce), payload).ok()?;
        String::from_utf8(secret).ok()
    }

    /// The key for the store at `store_url`: `configured` when there is one; else,
    /// on SQLite, the one in the key file beside the database, created now if there
    /// is none; else none (PostgreSQL and Redis are shared by nodes that must agree
    /// on the key, so it must be configured on each).
    pub fn for_store(
        configured: Option<SecretKey>,
        store_url: &str,
    ) -> anyhow::Result<Option<SecretKey>> {
        if configured.is_some() {
            return Ok(configured);
        }
        match crate::store::sqlite_path(store_url) {
            Some(database) => Ok(Some(SecretKey::from_key_file(&key_file_of(database))?)),
            None => Ok(None),
        }
    }

    /// The key in the file `path`, made first if the file does not exist.
    fn from_key_file(path: &Path) -> anyhow::Result<SecretKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => return SecretKey::read_key_file(path, &text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read the key file {}", path.display()))
            }
        }
        let mut bytes = [0u8; SECRET_KEY_LEN];
        rand::thread_rng().fill_bytes(&mut bytes);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        match write_new_file(path, format!("{text}\n").as_bytes()) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "made the key AWS secrets are sealed under");
                Ok(SecretKey::from_bytes(bytes))
            }
            // Another process (a `hopper clients` next to `serve`) made it first.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the key file {}", path.display()))?;
                SecretKey::read_key_file(path, &text)
            }
            Err(error) => {
                Err(error).with_context(|| format!("cannot create the key file {}", path.display()))
            }
        }
    }

    fn read_key_file(path: &Path, text: &str) -> anyhow::Result<SecretKey> {
        warn_if_readable_by_others(path);
        SecretKey::from_base64(text).map_err(|error| {
            anyhow::anyhow!(
                "the key file {} {error}; it seals the AWS secrets of this store, so restore it rather than replace it",
                path.display()
            )
        })
    }
}

/// `<database>.secret-key`.
fn key_file_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(KEY_FILE_SUFFIX);
    PathBuf::from(name)
}

/// Writes `contents` to a new file `path`, readable by its owner only, all at once:
/// written and synced under a temporary name, then linked to `path` only if
/// nothing is there, so no reader sees half a key and no key is overwritten.
/// `AlreadyExists` if `path` exists.
fn write_new_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates its files with mode 0600.
    let mut file = tempfile::NamedTempFile::new_in(directory)?;
    file.write_all(contents)?;
    file.as_file().sync_all()?;
    file.persist_noclobber(path).map_err(|e| e.error)?;
    // The new name is durable once its directory is.
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the key file can be read by others than its owner: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_id(text: &str) -> AccessKeyId {
        AccessKeyId::parse(text).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_its_access_key_id_only() {
        let key =
            SecretKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
                .unwrap();
        let id = key_id("HOPRAAAAAAAAAAAAAAAA");
        let sealed = key.seal(&id, "the secret");
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_eq!(key.open(&id, &sealed).as_deref(), Some("the secret"));
        assert_ne!(
            key.seal(&id, "the secret"),
            sealed,
            "a nonce of its own each time"
        );
        assert_eq!(key.open(&key_id("HOPRBBBBBBBBBBBBBBBB"), &sealed), None);
        let other = SecretKey::from_bytes([8u8; 32]);
        assert_eq!(other.open(&id, &sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&id, &tampered), None);
        assert_eq!(key.open(&id, &sealed[..10]), None);
        assert_eq!(key.open(&id, &[]), None);
    }

    #[test]
    fn a_key_is_the_base64_of_32_bytes() {
        let encoded = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(SecretKey::from_base64(&encoded).is_ok());
        assert!(SecretKey::from_base64(&format!(" {encoded}\n")).is_ok());
        assert!(SecretKey::from_base64(encoded.trim_end_matches('=')).is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(matches!(
            SecretKey::from_base64(&short),
            Err(SecretKeyError::WrongLength(16))
        ));
        assert!(matches!(
            SecretKey::from_base64("not base64!"),
            Err(SecretKeyError::NotBase64)
        ));
    }

    #[test]
    fn the_key_file_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/hopper.db", dir.path().display());
        let key = SecretKey::for_store(None, &url).unwrap().unwrap();
        let path = dir.path().join("hopper.db.secret-key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let id = key_id("HOPRAAAAAAAAAAAAAAAA");
        let again = SecretKey::for_store(None, &url).unwrap().unwrap();
        assert_eq!(again.open(&id, &key.seal(&id, "s")).as_deref(), Some("s"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );

        std::fs::write(&path, "short").unwrap();
        let error = SecretKey::for_store(None, &url).unwrap_err().to_string();
        assert!(error.contains("hopper.db.secret-key"), "{error}");
        assert!(SecretKey::for_store(None, "postgres://u@h/db")
            .unwrap()
            .is_none());
    }
}
