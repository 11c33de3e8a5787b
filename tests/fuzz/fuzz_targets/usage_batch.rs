//! The body of POST /v1/usage: parsed, then validated against a plan with one metric.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ballast::billing::plans::UsageLimit;
use ballast::usage::{UsageBatch, validate};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = UsageBatch::parse(data) {
        let limits = std::collections::BTreeMap::from([("api_calls".to_owned(), UsageLimit { limit: 10, overage: false })]);
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        if validate(&batch.items, &limits, now).is_ok() {
            for item in &batch.items {
                let _ = ballast::usage::month(item.timestamp);
            }
        }
    }
});
