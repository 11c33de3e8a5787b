//! Wakes idle workers when apalis-redis announces new work on pub/sub, so pickup does not
//! wait for a poll. One subscription per process serves every queue; it reconnects on its
//! own, and after a reconnect wakes every queue in case an announcement was missed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Inner {
    waker: AtomicWaker,
    set: AtomicBool,
    /// Counts announcements, so a fetch can tell whether one arrived while it was in flight.
    generation: AtomicU64,
}

/// A stream that yields once per wake-up of one queue (coalesced).
#[derive(Debug, Clone, Default)]
pub struct QueueSignal(Arc<Inner>);

impl QueueSignal {
    /// An announcement: new work on the queue.
    fn notify(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        self.wake();
    }

    /// Wakes the worker for one more fetch without counting an announcement (so re-arms do
    /// not trigger re-arms).
    fn wake(&self) {
        self.0.set.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }
}

impl Stream for QueueSignal {
    type Item = ();
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let inner = &self.0;
        // Registered on every poll, also when yielding: a later announcement (or a re-arm by
        // `SignalledConnection`) must find a waker even if this poll consumes the current one.
        inner.waker.register(cx.waker());
        if inner.set.swap(false, Ordering::AcqRel) { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}

/// The Redis connection of one queue's apalis storage, closing a lost-wake-up race.
///
/// apalis's poll strategy consumes a wake-up whenever the worker is polled, even while a fetch
/// that started *before* the announcement is still in flight; that fetch can come back empty
/// and the worker then sleeps until the next interval poll (up to a second) with work waiting.
/// So: when any request on this connection completes and an announcement arrived while it was
/// in flight, announce again. The worker is woken once more after the stale fetch has finished,
/// and its next fetch starts after the announcement. A spurious extra fetch is the only cost.
#[derive(Clone)]
pub struct SignalledConnection<C = redis::aio::ConnectionManager> {
    inner: C,
    signal: QueueSignal,
}

impl<C> SignalledConnection<C> {
    /// Wraps `inner` for the queue that `signal` belongs to.
    pub fn new(inner: C, signal: QueueSignal) -> Self {
        Self { inner, signal }
    }

    fn rearm_if_announced_since(&self, generation: u64) {
        if self.signal.generation() != generation {
            self.signal.wake();
        }
    }
}

impl<C: redis::aio::ConnectionLike + Send> redis::aio::ConnectionLike for SignalledConnection<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let generation = self.signal.generation();
            let result = self.inner.req_packed_command(cmd).await;
            self.rearm_if_announced_since(generation);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let generation = self.signal.generation();
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            self.rearm_if_announced_since(generation);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// The per-process subscription and the signals it drives, by apalis queue name.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    signals: Arc<Mutex<HashMap<String, QueueSignal>>>,
}

impl Wakeups {
    /// The signal of one apalis queue (created on first use).
    pub fn signal(&self, queue: &str) -> QueueSignal {
        let mut map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(queue.to_owned()).or_default().clone()
    }

    fn wake(&self, queue: &str) {
        let map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(queue) {
            s.notify();
        }
    }

    fn wake_all(&self) {
        let map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        map.values().for_each(QueueSignal::notify);
    }

    /// Listens on `pattern` until `stop`, reconnecting with backoff.
    pub async fn listen(self, client: redis::Client, pattern: String, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if let Err(e) = pubsub.psubscribe(&pattern).await {
                        tracing::warn!(message = "Queue wake-up subscription failed.", error = %e);
                    } else {
                        delay = Duration::from_millis(100);
                        self.wake_all();
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                msg = messages.next() => match msg {
                                    // Channel: tasks:{queue}:active:available
                                    Some(msg) => {
                                        if let Some(queue) = msg.get_channel_name().strip_prefix("tasks:").and_then(|c| c.strip_suffix(":active:available")) {
                                            self.wake(queue);
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(message = "Queue wake-up connection failed; retrying.", error = %e),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;
    use redis::aio::ConnectionLike;
    use tokio::sync::Semaphore;

    use super::*;

    /// A connection whose every request waits until the test lets it through.
    #[derive(Clone)]
    struct Gate(Arc<Semaphore>);

    impl ConnectionLike for Gate {
        fn req_packed_command<'a>(&'a mut self, _cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
            Box::pin(async move {
                let _permit = self.0.acquire().await;
                Ok(redis::Value::Okay)
            })
        }
        fn req_packed_commands<'a>(
            &'a mut self,
            _p: &'a redis::Pipeline,
            _offset: usize,
            _count: usize,
        ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
            Box::pin(async move { Ok(Vec::new()) })
        }
        fn get_db(&self) -> i64 {
            0
        }
    }

    async fn fetch_with(announce_during: bool) -> (QueueSignal, Option<Option<()>>) {
        let signal = QueueSignal::default();
        let gate = Gate(Arc::new(Semaphore::new(0)));
        let mut conn = SignalledConnection::new(gate.clone(), signal.clone());
        let mut stream = signal.clone();
        let cmd = redis::cmd("EVALSHA");
        let mut fetch = conn.req_packed_command(&cmd);
        assert!((&mut fetch).now_or_never().is_none(), "the fetch is in flight");
        if announce_during {
            signal.notify();
            // apalis's strategy consumes the wake-up while the stale fetch is still in flight.
            assert_eq!(stream.next().now_or_never(), Some(Some(())));
        }
        assert_eq!(stream.next().now_or_never(), None, "nothing pending while the fetch runs");
        gate.0.add_permits(1);
        fetch.await.expect("fetch");
        let after = stream.next().now_or_never();
        (signal, after)
    }

    #[tokio::test]
    async fn an_announcement_during_a_fetch_wakes_the_worker_again_after_it() {
        let (_, after) = fetch_with(true).await;
        assert_eq!(after, Some(Some(())), "the worker must fetch again: the job came after the stale fetch began");
    }

    #[tokio::test]
    async fn a_quiet_fetch_does_not_wake_the_worker() {
        let (_, after) = fetch_with(false).await;
        assert_eq!(after, None);
    }
}
