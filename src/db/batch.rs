//! Group commit: many concurrent callers' rows written in one statement and one commit.
//! A caller hands its item to a [`Batcher`] and waits; one task takes every item waiting (up to
//! a maximum), runs the batch function once and answers each caller with its own result. Under
//! light load a batch is one item and costs nothing extra; under heavy load a commit serves
//! hundreds of callers, which is what lets PostgreSQL keep up with thousands of small writes a
//! second on two cores.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

/// The batch failed as a whole (each caller gets the same text), or the batcher is gone.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

type Reply<O> = oneshot::Sender<Result<O, BatchError>>;
type RunBatch<I, O> = Arc<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Result<Vec<O>, BatchError>> + Send>> + Send + Sync>;

/// Collects items from concurrent callers into batches for one function.
pub struct Batcher<I, O> {
    sender: mpsc::UnboundedSender<(I, Reply<O>)>,
    // Taken by the first call, which starts the task on the caller's runtime.
    pending: Arc<Mutex<Option<(mpsc::UnboundedReceiver<(I, Reply<O>)>, RunBatch<I, O>, usize)>>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone(), pending: self.pending.clone() }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// A batcher of up to `max` items per call of `run`, which must answer one output per
    /// input, in order.
    pub fn new<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, BatchError>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::unbounded_channel();
        let run: RunBatch<I, O> = Arc::new(move |items| Box::pin(run(items)));
        Self { sender, pending: Arc::new(Mutex::new(Some((receiver, run, max.max(1))))) }
    }

    /// Runs `item` in the next batch and returns its output.
    pub async fn call(&self, item: I) -> Result<O, BatchError> {
        self.start();
        let (reply, answer) = oneshot::channel();
        self.sender.send((item, reply)).map_err(|_| BatchError("the batcher stopped".into()))?;
        answer.await.map_err(|_| BatchError("the batcher stopped before answering".into()))?
    }

    fn start(&self) {
        let Ok(mut pending) = self.pending.lock() else { return };
        if let Some((receiver, run, max)) = pending.take() {
            tokio::spawn(serve(receiver, run, max));
        }
    }
}

async fn serve<I, O>(mut receiver: mpsc::UnboundedReceiver<(I, Reply<O>)>, run: RunBatch<I, O>, max: usize) {
    let mut waiting = Vec::with_capacity(max);
    // Every item waiting when the previous batch ends goes into the next one.
    while receiver.recv_many(&mut waiting, max).await > 0 {
        let (items, replies): (Vec<I>, Vec<Reply<O>>) = waiting.drain(..).unzip();
        let count = items.len();
        match run(items).await {
            Ok(outputs) if outputs.len() == count => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Ok(outputs) => {
                let e = BatchError(format!("a batch of {count} answered {}", outputs.len()));
                replies.into_iter().for_each(|r| drop(r.send(Err(e.clone()))));
            }
            Err(e) => replies.into_iter().for_each(|r| drop(r.send(Err(e.clone())))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::new(64, move |items: Vec<u32>| {
            seen.lock().expect("lock").push(items.len());
            async move { Ok(items.into_iter().map(|i| i * 2).collect()) }
        });
        let calls = (0..200u32).map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { (i, b.call(i).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (i, out) = call.expect("task");
            assert_eq!(out.expect("answer"), i * 2);
        }
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
        let failing = Batcher::new(8, |_: Vec<u32>| async { Err::<Vec<u32>, _>(BatchError("down".into())) });
        assert_eq!(failing.call(1).await.expect_err("fails").0, "down");
    }
}
