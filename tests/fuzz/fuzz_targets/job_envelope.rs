//! A stored job run as the worker decodes it, and the pickup time it computes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ballast::queue::JobEnvelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = JobEnvelope::decode(data) {
        let _ = envelope.waited(i64::MAX);
        let _ = envelope.waited(i64::MIN);
        let _ = envelope.waited(0);
        let _ = serde_json::to_vec(&envelope);
    }
});
