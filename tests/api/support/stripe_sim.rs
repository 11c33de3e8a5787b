//! The tests' Stripe: the simulator in `ballast::devstripe`, one implementation for the tests
//! and for `ballast dev stripe`.

pub use ballast::devstripe::*;
