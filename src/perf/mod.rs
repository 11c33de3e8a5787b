//! Performance tooling, in one place (benches/ at the top holds the scripts that drive it
//! against peers and the results they wrote):
//! - [`bench`]: benchmarks run from the CLI (`ballast bench …`), each a ratio against a peer
//!   or a previous build, never a timed test. It builds whole members, so it sits with the edges.
//! - [`loadtest`]: the capacity load test (`ballast loadtest`, and the scheduled `loadtest.run`
//!   job, which gets it from the member's state as its `CapacityTest`) against a running
//!   fleet, with its stored baselines.

pub mod bench;
pub mod loadtest;
pub mod proc_cpu;
