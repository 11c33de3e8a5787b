//! `Stripe-Signature` verification, done by us over the raw body: HMAC-SHA256 of
//! `{t}.{payload}`, accepted when any `v1` matches any configured secret (two during a
//! rotation), within a tolerance in both directions, compared in constant time.
//! (async-stripe's verifier keeps only the last `v1` and hard-codes its tolerance.)
//!
//! The header is attacker-controlled and the route needs no credential, so the work is bounded
//! whatever it holds: the header is capped at [`MAX_HEADER_BYTES`], at most [`MAX_V1`] `v1`
//! values are kept, a `v1` that is not 32 bytes of hex is skipped before any hashing, and the
//! MAC is computed once per secret (never once per `v1`): a check costs at most one HMAC of
//! the body per configured secret.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Longest `Stripe-Signature` header read. Stripe's is about 150 bytes (two `v1` during a
/// rotation plus a `v0`); 4 KiB leaves room for any future scheme.
pub const MAX_HEADER_BYTES: usize = 4096;

/// Most `v1` values compared. Stripe sends one per active signing secret (two at most during
/// a rotation); the rest are ignored.
pub const MAX_V1: usize = 8;

/// Bytes of an HMAC-SHA256.
const MAC_LEN: usize = 32;

/// Why a signature was refused. The message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    Missing,
    /// The header does not parse as `t=…,v1=…`.
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    /// The header is longer than [`MAX_HEADER_BYTES`].
    #[error("Stripe-Signature header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the tolerance of {tolerance_secs} s (off by {skew_secs} s)")]
    OutsideTolerance {
        /// How far the timestamp is from now, in seconds.
        skew_secs: i64,
        /// The allowed skew.
        tolerance_secs: i64,
    },
    /// No `v1` matched any secret.
    #[error("no signature matches")]
    Mismatch,
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`: unix seconds when Stripe signed.
    pub timestamp: i64,
    /// The well-formed `v1` signatures (32 bytes each), in header order, at most [`MAX_V1`].
    pub v1: Vec<[u8; MAC_LEN]>,
}

impl SignatureHeader {
    /// Parses `t=…,v1=…[,v1=…][,v0=…]`. Unknown schemes are ignored, as Stripe asks; so is a
    /// `v1` that is not 64 hex digits (it cannot match) and every `v1` past [`MAX_V1`].
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        if header.len() > MAX_HEADER_BYTES {
            return Err(SignatureError::TooLong);
        }
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for part in header.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed("expected key=value pairs"))?;
            match key {
                "t" => {
                    let t = value.parse::<i64>().map_err(|_| SignatureError::Malformed("t is not a unix timestamp"))?;
                    if timestamp.replace(t).is_some() {
                        return Err(SignatureError::Malformed("more than one t"));
                    }
                }
                "v1" if v1.len() < MAX_V1 => {
                    let mut mac = [0u8; MAC_LEN];
                    if hex::decode_to_slice(value, &mut mac).is_ok() {
                        v1.push(mac);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
        if v1.is_empty() {
            return Err(SignatureError::Malformed("no v1 signature of 64 hex digits"));
        }
        Ok(Self { timestamp, v1 })
    }
}

/// Stripe's signature of `payload` at `timestamp` with `secret`, hex-encoded (what a
/// `v1=` carries). Used by the verifier's tests and by the Stripe simulator.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, payload).finalize().into_bytes())
}

#[cfg(test)]
thread_local! {
    /// MACs computed on this thread (tests count the work a header causes).
    static MACS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    #[cfg(test)]
    MACS.with(|m| m.set(m.get() + 1));
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// Verifies `header` over the raw `payload` at `now` (unix seconds).
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[SecretString],
    now: i64,
    tolerance_secs: i64,
) -> Result<SignatureHeader, SignatureError> {
    let parsed = SignatureHeader::parse(header.ok_or(SignatureError::Missing)?)?;
    // Saturating: a hostile `t` near i64::MIN must not overflow (found by fuzzing).
    let skew = now.saturating_sub(parsed.timestamp);
    if skew.unsigned_abs() > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance { skew_secs: skew, tolerance_secs });
    }
    // One MAC per secret, compared with every candidate in constant time.
    for secret in secrets {
        let expected = mac(secret.expose_secret(), parsed.timestamp, payload).finalize().into_bytes();
        if parsed.v1.iter().any(|candidate| bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &candidate[..]))) {
            return Ok(parsed);
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_timestamps_are_outside_tolerance_not_an_overflow() {
        for t in [i64::MIN, i64::MAX, -1] {
            let header = format!("t={t},v1={}", "00".repeat(32));
            let err = verify(Some(&header), b"{}", &secrets(&["whsec_x"]), 1_700_000_000, 300).expect_err("refused");
            assert!(matches!(err, SignatureError::OutsideTolerance { .. }), "{t}: {err:?}");
        }
    }

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(s.to_string())).collect()
    }

    #[test]
    fn any_v1_against_any_secret_is_accepted() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign("whsec_new", 1000, body);
        let other = sign("whsec_unknown", 1000, body);
        // The matching v1 first, then last: async-stripe would see only the last one.
        for header in [format!("t=1000,v1={good},v1={other}"), format!("t=1000,v1={other},v1={good},v0=abc")] {
            assert!(verify(Some(&header), body, &secrets(&["whsec_old", "whsec_new"]), 1000, 300).is_ok(), "{header}");
        }
        let header = format!("t=1000,v1={other}");
        assert_eq!(verify(Some(&header), body, &secrets(&["whsec_new"]), 1000, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn work_is_bounded_whatever_the_header_holds() {
        let body = vec![b'x'; 256 * 1024];
        let keys = secrets(&["whsec_a", "whsec_b"]);
        let macs = |header: &str| {
            MACS.with(|m| m.set(0));
            let result = verify(Some(header), &body, &keys, 1000, 300);
            (result, MACS.with(|m| m.get()))
        };
        // What the probe sent: tens of thousands of v1 values.
        let (result, n) = macs(&format!("t=1000,{}", "v1=,".repeat(95_000)));
        assert_eq!((result, n), (Err(SignatureError::TooLong), 0));
        // Under the length cap, junk values are skipped unhashed.
        let (result, n) = macs(&format!("t=1000,{}", "v1=zz,".repeat(600)));
        assert!(matches!(result, Err(SignatureError::Malformed(_))) && n == 0, "{n}");
        // Well-formed but wrong: one MAC per secret, however many v1 values.
        let wrong = format!("v1={},", "ab".repeat(32));
        let (result, n) = macs(&format!("t=1000,{}", wrong.repeat(50)));
        assert_eq!((result, n), (Err(SignatureError::Mismatch), 2));
        // A matching v1 past the first MAX_V1 is not looked at.
        let good = sign("whsec_b", 1000, &body);
        let (result, _) = macs(&format!("t=1000,{}v1={good}", wrong.repeat(MAX_V1)));
        assert_eq!(result, Err(SignatureError::Mismatch));
        let (result, _) = macs(&format!("t=1000,{}v1={good}", wrong.repeat(MAX_V1 - 1)));
        assert!(result.is_ok());
    }

    #[test]
    fn tolerance_applies_both_ways() {
        let body = b"{}";
        let header = format!("t=1000,v1={}", sign("s", 1000, body));
        assert!(verify(Some(&header), body, &secrets(&["s"]), 1300, 300).is_ok());
        assert!(matches!(verify(Some(&header), body, &secrets(&["s"]), 1301, 300), Err(SignatureError::OutsideTolerance { .. })));
        assert!(matches!(verify(Some(&header), body, &secrets(&["s"]), 699, 300), Err(SignatureError::OutsideTolerance { .. })));
    }

    #[test]
    fn malformed_headers_are_named() {
        for (h, _) in [("", ()), ("t=abc,v1=00", ()), ("t=1,v1=zz", ()), ("v1=00", ()), ("t=1", ()), ("garbage", ()), ("t=1,v1=00", ())] {
            assert!(matches!(SignatureHeader::parse(h), Err(SignatureError::Malformed(_))), "{h}");
        }
        assert_eq!(verify(None, b"", &secrets(&["s"]), 0, 300).unwrap_err(), SignatureError::Missing);
    }

    #[test]
    fn a_changed_body_fails() {
        let header = format!("t=5,v1={}", sign("s", 5, b"{\"a\":1}"));
        assert_eq!(verify(Some(&header), b"{\"a\":2}", &secrets(&["s"]), 5, 300), Err(SignatureError::Mismatch));
    }
}
