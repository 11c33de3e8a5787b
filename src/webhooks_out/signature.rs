//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded part of a
//! `whsec_…` secret. During a rotation both secrets sign, space-separated, so a receiver
//! holding either verifies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A secret that cannot sign.
#[derive(Debug, thiserror::Error)]
#[error("a signing secret is `whsec_` and base64 of 24 to 64 bytes")]
pub struct BadSecret;

/// A new signing secret: 32 random bytes, `whsec_` and base64, as the specification
/// recommends (between 24 and 64 bytes).
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

fn key_of(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).map_err(|_| BadSecret)?;
    if !(24..=64).contains(&key.len()) {
        return Err(BadSecret);
    }
    Ok(key)
}

/// One signature, `v1,<base64>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)?).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret (the current one first).
pub fn header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let signatures = secrets.iter().map(|s| sign(s, id, timestamp, body)).collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_published_test_vector_reproduces_exactly() {
        let signed = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signed.expect("valid"), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn an_independent_implementation_verifies_what_ballast_signs_with_either_secret_of_a_rotation() {
        let (old, new) = (new_secret(), new_secret());
        let (id, now, body) = ("msg_2", chrono::Utc::now().timestamp(), br#"{"type":"invoice.paid"}"#);
        let value = header(&[&new, &old], id, now, body).expect("sign");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("webhook-id", id.parse().expect("id"));
        headers.insert("webhook-timestamp", now.to_string().parse().expect("ts"));
        headers.insert("webhook-signature", value.parse().expect("sig"));
        for secret in [&old, &new] {
            standardwebhooks::Webhook::new(secret).expect("their parser takes our secret").verify(body, &headers).expect("verified");
        }
        let stranger = new_secret();
        assert!(standardwebhooks::Webhook::new(&stranger).expect("secret").verify(body, &headers).is_err());
        assert!(sign("whsec_short", id, now, body).is_err(), "a secret too short is refused");
    }
}
