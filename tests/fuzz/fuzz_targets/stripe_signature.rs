//! The Stripe-Signature header: parse, then verify against a body, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ballast::stripe::signature::{SignatureHeader, verify};

fuzz_target!(|data: &[u8]| {
    // First line: the header; the rest: the body it claims to sign.
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(header) = std::str::from_utf8(header) else { return };
    let _ = SignatureHeader::parse(header);
    let secrets = [secrecy::SecretString::from("whsec_fuzz".to_owned())];
    let _ = verify(Some(header), body, &secrets, 1_700_000_000, 300);
});
