//! A webhook body as the intake parses it, and the accessors routing reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ballast::stripe::event::StripeEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = StripeEvent::parse(data, 1_700_000_000) {
        let _ = event.customer_id();
        let _ = event.object_id();
        let _ = ballast::stripe::handlers::handles(&event.event_type);
    }
});
