//! Dynamic batching: concurrent requests are encoded together in one ONNX Runtime call.
//!
//! Each request thread tokenises its own texts (so the budget below is counted in real tokens), queues a job
//! and waits for its vectors. One batching thread per served generation takes the first waiting job, then
//! everything already queued, and, while other requests are still in flight, waits up to `max_wait` for more,
//! until the padded batch would pass `max_batch_tokens`. It then runs the whole batch as one call of the
//! encoder (which sorts by length and splits only at the encoder's own token budget) and hands each job its
//! rows. Requests that arrive during a run form the next batch, so under load batches grow by themselves and
//! an idle server adds no wait at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::embed::OrtEncoder;
use crate::error::{Error, Result};
use crate::query::{encode_ids, QueryEncoder, QueryVectors};

use super::telemetry::Metrics;

/// How the batching thread groups requests.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// A batch is closed before its padded size (texts × longest) would pass this many tokens.
    pub max_batch_tokens: usize,
    /// The longest a job waits for company while other requests are in flight.
    pub max_wait: Duration,
}

/// How often a waiting batch re-checks the in-flight count.
const POLL: Duration = Duration::from_micros(200);

struct Job {
    ids: Vec<Vec<u32>>,
    tokens: bool,
    reply: mpsc::SyncSender<Result<Vec<QueryVectors>>>,
}

impl Job {
    fn longest(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The queue in front of one generation's model. Dropping it ends its thread once the queue is empty.
pub struct Batcher {
    enc: Arc<OrtEncoder>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// `inflight` counts the HTTP requests being served: while it is above the jobs already in the batch, more
    /// may come, and the thread waits for them (at most `max_wait`).
    pub fn start(
        enc: Arc<OrtEncoder>,
        cfg: BatchConfig,
        metrics: Arc<Metrics>,
        inflight: Arc<AtomicUsize>,
        name: String,
    ) -> Result<Batcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (enc2, m2) = (enc.clone(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&enc2, cfg, &rx, &m2, &inflight))
            .map_err(|e| Error::internal(format!("starting the batching thread: {e}")))?;
        Ok(Batcher { enc, tx: Some(tx), thread: Some(thread), metrics })
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl QueryEncoder for Batcher {
    fn encode(&self, texts: &[&str], tokens: bool) -> Result<Vec<QueryVectors>> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let ids = self.enc.tokenize(texts)?;
        let (reply, rx) = mpsc::sync_channel(1);
        let tx = self.tx.as_ref().ok_or_else(|| Error::internal("the batching queue is closed"))?;
        self.metrics.queue_depth.inc();
        if tx.send(Job { ids, tokens, reply }).is_err() {
            self.metrics.queue_depth.dec();
            return Err(Error::internal("the batching thread has stopped"));
        }
        rx.recv().map_err(|_| Error::internal("the batching thread dropped a request"))?
    }
}

fn run(enc: &OrtEncoder, cfg: BatchConfig, rx: &mpsc::Receiver<Job>, m: &Metrics, inflight: &AtomicUsize) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => {
                    m.queue_depth.dec();
                    j
                }
                Err(_) => return,
            },
        };
        let (mut count, mut longest) = (first.ids.len(), first.longest());
        let mut jobs = vec![first];
        let deadline = Instant::now() + cfg.max_wait;
        loop {
            let job = match rx.try_recv() {
                Ok(j) => j,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    // Wait only while other requests are in flight (they may be about to queue) and time is left.
                    if now >= deadline || inflight.load(Ordering::Relaxed) <= jobs.len() {
                        break;
                    }
                    match rx.recv_timeout((deadline - now).min(POLL)) {
                        Ok(j) => j,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            m.queue_depth.dec();
            let (c, l) = (count + job.ids.len(), longest.max(job.longest()));
            if c * l > cfg.max_batch_tokens {
                carry = Some(job);
                break;
            }
            (count, longest) = (c, l);
            jobs.push(job);
        }
        run_batch(enc, jobs, m);
    }
}

fn run_batch(enc: &OrtEncoder, jobs: Vec<Job>, m: &Metrics) {
    let tokens = jobs.iter().any(|j| j.tokens);
    let ids: Vec<Vec<u32>> = jobs.iter().flat_map(|j| j.ids.iter().cloned()).collect();
    m.batch_size.observe(ids.len() as f64);
    m.batch_tokens.observe(ids.iter().map(Vec::len).sum::<usize>() as f64);
    match encode_ids(enc, &ids, tokens) {
        Ok(all) => {
            let mut all = all.into_iter();
            for j in jobs {
                let mut rows: Vec<QueryVectors> = all.by_ref().take(j.ids.len()).collect();
                if !j.tokens {
                    rows.iter_mut().for_each(|r| r.tokens = None);
                }
                let _ = j.reply.send(Ok(rows));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for j in jobs {
                let _ = j.reply.send(Err(Error::Internal(message.clone())));
            }
        }
    }
}
