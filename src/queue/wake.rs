//! Wakes idle workers when apalis-redis announces new work on pub/sub, so pickup does not
//! wait for a poll. One subscription per process serves every queue; it reconnects on its
//! own, and after a reconnect wakes every queue in case an announcement was missed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// A stream that yields once per wake-up of one queue (coalesced).
#[derive(Debug, Clone, Default)]
pub struct QueueSignal(Arc<Inner>);

impl QueueSignal {
    /// An announcement: new work on the queue. It stays set until the consumer next waits, so
    /// one that arrives while a fetch is in flight (and that fetch comes back empty) sends the
    /// consumer to fetch again instead of to sleep: only the consumer's wait consumes it.
    fn notify(&self) {
        self.0.set.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

impl Stream for QueueSignal {
    type Item = ();
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let inner = &self.0;
        // Registered on every poll, also when yielding: a later announcement must find a waker
        // even if this poll consumes the current one.
        inner.waker.register(cx.waker());
        if inner.set.swap(false, Ordering::AcqRel) { Poll::Ready(Some(())) } else { Poll::Pending }
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
