//! Secrets handed to callers: `{kind}_{prefix}_{secret}`, the prefix stored in clear to find the
//! row, the whole stored only as its SHA-256 (190 random bits: a fast hash is enough) and
//! compared in constant time. API keys are `bk_`, operator tokens `bo_`, support sessions `bs_`.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_text(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A new secret of `kind` (`bk`, `bo`, `bs`): (prefix, the whole secret). The whole is shown
/// once and never stored.
pub fn generate(kind: &str) -> (String, String) {
    let prefix = random_text(PREFIX_LEN);
    let whole = format!("{kind}_{prefix}_{}", random_text(SECRET_LEN));
    (prefix, whole)
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The prefix of a well-formed secret of `kind`.
pub fn prefix_of<'a>(kind: &str, secret: &'a str) -> Option<&'a str> {
    let rest = secret.strip_prefix(kind)?.strip_prefix('_')?;
    let (prefix, tail) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    (ok(prefix, PREFIX_LEN) && ok(tail, SECRET_LEN)).then_some(prefix)
}

/// Whether `presented` hashes to `stored`, in constant time.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    bool::from(hash(presented).ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_each_kind_parse_only_as_their_kind() {
        let (prefix, key) = generate("bo");
        assert_eq!(prefix_of("bo", &key), Some(prefix.as_str()));
        assert_eq!(prefix_of("bk", &key), None);
        assert!(matches(&key, &hash(&key)));
        let (_, other) = generate("bo");
        assert!(!matches(&other, &hash(&key)));
        assert_eq!(prefix_of("bo", "bo_short_x"), None);
    }
}
