//! Secrets at rest: what Ballast must read back (outbound webhook signing secrets) is stored
//! sealed with AES-256-GCM (ring) under a key from the environment, never in plain text, so a
//! database dump alone signs nothing. Hashes (API keys) stay hashes.
//!
//! A stored value is `sealed:v1:{key id}:{base64 of nonce and ciphertext}`; the key id travels
//! with each value, so keys rotate: `BALLAST_SECRETS_KEYRING` lists `id:base64key` pairs, the
//! first sealing and all of them opening, and `ballast secrets rotate-key --execute` re-seals
//! every value under the first. Each value is bound to its row (the associated data), so a
//! sealed secret copied to another row does not open there.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "sealed:v1:";

/// The id of the development key: what seals when no keyring is configured (the two-command
/// quickstart), with a warning at start. Production sets its own.
pub const DEV_KEY_ID: &str = "dev";
const DEV_KEY: [u8; 32] = *b"ballast-development-key-not-prod";

/// Why a keyring or a sealed value is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// The keyring setting does not parse.
    #[error("BALLAST_SECRETS_KEYRING: {0}")]
    Setting(String),
    /// A value sealed under a key this keyring does not hold.
    #[error("a secret is sealed under key {0:?}, which BALLAST_SECRETS_KEYRING does not hold (keep old keys listed until `ballast secrets rotate-key --execute` has run)")]
    UnknownKey(String),
    /// A value that does not open: altered, or not this row's.
    #[error("a sealed secret does not open: it was altered or belongs to another row")]
    Corrupt,
    /// The operating system's random source failed (no nonce, so nothing is sealed).
    #[error("the system random source failed")]
    Random,
}

/// The keys secrets are sealed with, each expanded once (every delivery opens a secret).
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, Arc<LessSafeKey>>,
}

fn expanded(bytes: &[u8; 32]) -> Result<Arc<LessSafeKey>, KeyringError> {
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyringError::Setting("not an AES-256 key".into()))?;
    Ok(Arc::new(LessSafeKey::new(unbound)))
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("current", &self.current).field("ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl Keyring {
    /// The keyring of `BALLAST_SECRETS_KEYRING` (`id:base64key,…`, first seals), or the
    /// development key when it is unset.
    pub fn parse(setting: Option<&str>) -> Result<Self, KeyringError> {
        let Some(raw) = setting.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(Self::development()) };
        let mut keys = BTreeMap::new();
        let mut current = None;
        for pair in raw.split(',').map(str::trim) {
            let (id, key) = pair.split_once(':').ok_or_else(|| KeyringError::Setting("each key is id:base64 of 32 bytes (openssl rand -base64 32)".into()))?;
            if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(KeyringError::Setting(format!("key id {id:?}: 1 to 32 letters, digits, '-' or '_'")));
            }
            let bytes = STANDARD.decode(key.trim()).map_err(|_| KeyringError::Setting(format!("key {id}: not base64")))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| KeyringError::Setting(format!("key {id}: must be 32 bytes (openssl rand -base64 32)")))?;
            if keys.insert(id.to_owned(), expanded(&key)?).is_some() {
                return Err(KeyringError::Setting(format!("key id {id} is listed twice")));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current = current.ok_or_else(|| KeyringError::Setting("no key".into()))?;
        Ok(Self { current, keys })
    }

    /// Only the development key.
    pub fn development() -> Self {
        // A 32-byte key always expands; the map stays empty (every seal then fails) if not.
        let keys = expanded(&DEV_KEY).map(|k| BTreeMap::from([(DEV_KEY_ID.to_owned(), k)])).unwrap_or_default();
        Self { current: DEV_KEY_ID.into(), keys }
    }

    /// Whether values are sealed under the development key (a production fleet warns).
    pub fn is_development(&self) -> bool {
        self.current == DEV_KEY_ID
    }

    /// The id of the key that seals.
    pub fn current(&self) -> &str {
        &self.current
    }

    fn key(&self, id: &str) -> Result<&LessSafeKey, KeyringError> {
        self.keys.get(id).map(Arc::as_ref).ok_or_else(|| KeyringError::UnknownKey(id.to_owned()))
    }

    /// `plain` sealed under the current key, bound to `row` (its table and id).
    pub fn seal(&self, plain: &str, row: &str) -> Result<String, KeyringError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeyringError::Random)?;
        let mut sealed = plain.as_bytes().to_vec();
        self.key(&self.current)?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(row.as_bytes()), &mut sealed)
            .map_err(|_| KeyringError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!("{PREFIX}{}:{}", self.current, STANDARD.encode(out)))
    }

    /// The plain text of a stored value bound to `row`. A value stored before sealing existed
    /// (no prefix) is returned as it is, until `rotate-key` seals it.
    pub fn open(&self, stored: &str, row: &str) -> Result<String, KeyringError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (id, body) = rest.split_once(':').ok_or(KeyringError::Corrupt)?;
        let bytes = STANDARD.decode(body).map_err(|_| KeyringError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(KeyringError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyringError::Corrupt)?;
        let mut sealed = sealed.to_vec();
        let plain = self.key(id)?.open_in_place(nonce, Aad::from(row.as_bytes()), &mut sealed).map_err(|_| KeyringError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| KeyringError::Corrupt)
    }

    /// Whether a stored value is sealed under the current key (else `rotate-key` re-seals it).
    pub fn is_current(&self, stored: &str) -> bool {
        stored.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':')).is_some_and(|(id, _)| id == self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_on_its_row() {
        let ring = Keyring::parse(Some(&format!("k2:{},k1:{}", key(2), key(1)))).expect("keyring");
        assert_eq!(ring.current(), "k2");
        let sealed = ring.seal("whsec_abc", "webhook_endpoints:1").expect("sealed");
        assert!(sealed.starts_with("sealed:v1:k2:") && !sealed.contains("whsec_abc"), "{sealed}");
        assert_ne!(Ok(sealed.clone()), ring.seal("whsec_abc", "webhook_endpoints:1"), "a fresh nonce each time");
        assert_eq!(ring.open(&sealed, "webhook_endpoints:1").as_deref(), Ok("whsec_abc"));
        assert_eq!(ring.open(&sealed, "webhook_endpoints:2"), Err(KeyringError::Corrupt), "bound to its row");
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(ring.open(&altered, "webhook_endpoints:1"), Err(KeyringError::Corrupt));
        // An old key opens what it sealed; a keyring without it says which key is missing.
        let old = Keyring::parse(Some(&format!("k1:{}", key(1)))).expect("old");
        let by_old = old.seal("whsec_old", "r").expect("sealed");
        assert_eq!(ring.open(&by_old, "r").as_deref(), Ok("whsec_old"));
        assert!(!ring.is_current(&by_old) && ring.is_current(&sealed));
        assert_eq!(Keyring::parse(Some(&format!("k3:{}", key(3)))).expect("new").open(&by_old, "r"), Err(KeyringError::UnknownKey("k1".into())));
        // A plain value from before sealing reads as it is.
        assert_eq!(ring.open("whsec_plain", "r").as_deref(), Ok("whsec_plain"));
    }

    #[test]
    fn a_bad_keyring_setting_says_what_is_wrong() {
        for (bad, says) in [("nocolon", "id:base64"), ("k1:notbase64!", "not base64"), ("k1:AAAA", "32 bytes"), ("k 1:AAAA", "key id")] {
            let err = Keyring::parse(Some(bad)).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let twice = format!("k1:{},k1:{}", key(1), key(2));
        assert!(Keyring::parse(Some(&twice)).expect_err("twice").to_string().contains("twice"));
        assert!(Keyring::parse(None).expect("dev").is_development());
    }
}
