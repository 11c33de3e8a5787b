//! CPU-bound work off the async runtime's threads.
//!
//! The runtime has one thread per core; a request that hashes or parses a large body on one
//! of them delays every other task on that thread (probes, the scheduler's lease renewal).
//! [`offload`] runs such work on tokio's blocking pool, at most [`MAX_AT_ONCE`] pieces at a
//! time so a flood of large requests queues here (asynchronously) instead of starting hundreds
//! of threads. Small inputs are cheaper to handle inline than to hand over: callers decide
//! with [`worth_offloading`].

use std::sync::LazyLock;

use tokio::sync::Semaphore;

/// Pieces of offloaded work running at once (per process).
pub const MAX_AT_ONCE: usize = 4;

/// Inputs at least this large are offloaded; below it the hand-over costs more than the work
/// (an HMAC-SHA256 of 16 KiB plus its JSON parse is tens of microseconds).
pub const OFFLOAD_FROM_BYTES: usize = 16 * 1024;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_AT_ONCE));

/// Whether work over `len` bytes of input should run through [`offload`].
pub fn worth_offloading(len: usize) -> bool {
    len >= OFFLOAD_FROM_BYTES
}

/// The work failed to run at all (its thread panicked).
#[derive(Debug, thiserror::Error)]
#[error("offloaded work did not finish: {0}")]
pub struct OffloadError(String);

/// Runs `work` on the blocking pool once a permit is free, and returns its result.
pub async fn offload<T, F>(work: F) -> Result<T, OffloadError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _permit = PERMITS.acquire().await.map_err(|e| OffloadError(e.to_string()))?;
    tokio::task::spawn_blocking(work).await.map_err(|e| OffloadError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offloaded_work_returns_its_result_off_the_runtime_thread() {
        let runtime_thread = std::thread::current().id();
        let (value, thread) = offload(|| (6 * 7, std::thread::current().id())).await.expect("ran");
        assert_eq!(value, 42);
        assert_ne!(thread, runtime_thread);
    }
}
