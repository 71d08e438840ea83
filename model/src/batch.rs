//! Micro-batching of concurrent query embeddings.
//!
//! Each search query needs one tower call on one input. Run one by one, concurrent queries queue
//! behind the session's mutex and the device sees batches of 1; a GPU then idles between tiny
//! kernels, and a CPU repeats per-call overhead. A [`MicroBatcher`] owns one worker thread that
//! takes the first waiting input, collects more until it holds [`BatchPolicy::max_batch`] or
//! [`BatchPolicy::max_wait`] has passed, runs them as one call and hands each caller its own row.
//!
//! - With `max_wait` zero (the CPU default) nothing ever waits for company: a batch is whatever
//!   queued while the previous call ran, so a lone query's latency is unchanged.
//! - One bad input cannot fail its batch-mates: when a batch call fails, each input is retried
//!   alone, and only the failing one gets the error.
//! - Memory is bounded: the queue holds at most `queue` inputs (callers beyond that wait to
//!   enqueue), a batch at most `max_batch`.
//! - A panic in the batch function is caught and answered as an error; the worker keeps serving.
//! - The worker exits when the batcher is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use vitrine_core::error::{CoreError, Result};

/// How many inputs a batch may hold and how long the first of them may wait for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Inputs waiting for the worker at most; further callers block until there is room.
    pub queue: usize,
}

impl BatchPolicy {
    /// The largest batch a policy may ask for: a batch's inputs and outputs are held at once.
    pub const MAX_BATCH: usize = 1024;
    /// The longest a query may be held back to wait for batch-mates.
    pub const MAX_WAIT: Duration = Duration::from_millis(100);

    /// The policy, clamped to `1..=MAX_BATCH` inputs and at most `MAX_WAIT`.
    pub fn new(max_batch: usize, max_wait: Duration) -> Self {
        let max_batch = max_batch.clamp(1, Self::MAX_BATCH);
        BatchPolicy { max_batch, max_wait: max_wait.min(Self::MAX_WAIT), queue: max_batch * 4 }
    }
}

/// Counters of a batcher, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Tower calls made (retries of a failed batch included).
    pub calls: u64,
    /// Inputs answered.
    pub inputs: u64,
}

struct Job<I, O> {
    input: I,
    reply: Sender<Result<O>>,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    inputs: AtomicU64,
}

/// Runs `f` over batches of the inputs that concurrent callers of [`MicroBatcher::call`] send.
pub struct MicroBatcher<I, O> {
    tx: Sender<Job<I, O>>,
    counters: Arc<Counters>,
}

impl<I: Send + Clone + 'static, O: Send + 'static> MicroBatcher<I, O> {
    /// Starts the worker thread. `f` must return one output per input, in order.
    pub fn spawn<F>(name: &str, policy: BatchPolicy, f: F) -> Self
    where
        F: FnMut(Vec<I>) -> Result<Vec<O>> + Send + 'static,
    {
        let (tx, rx) = bounded::<Job<I, O>>(policy.queue.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name(format!("batch-{name}"))
            .spawn(move || worker(rx, policy, f, &c))
            .expect("spawn the batch worker thread");
        MicroBatcher { tx, counters }
    }

    /// Embeds one input as part of whatever batch it joins; blocks until its row is back.
    pub fn call(&self, input: I) -> Result<O> {
        let (reply, answer) = bounded(1);
        let gone = || CoreError::Inference { message: "the batch worker stopped".into() };
        self.tx.send(Job { input, reply }).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats { calls: self.counters.calls.load(Ordering::Relaxed), inputs: self.counters.inputs.load(Ordering::Relaxed) }
    }
}

fn worker<I: Clone, O, F>(rx: Receiver<Job<I, O>>, policy: BatchPolicy, mut f: F, counters: &Counters)
where
    F: FnMut(Vec<I>) -> Result<Vec<O>>,
{
    // Ends when every sender (the batcher) is dropped.
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + policy.max_wait;
        while jobs.len() < policy.max_batch {
            // Nothing more queued (or the deadline passed, or the batcher is gone): run what we have.
            let next = if policy.max_wait.is_zero() { rx.try_recv().ok() } else { rx.recv_deadline(deadline).ok() };
            match next {
                Some(j) => jobs.push(j),
                None => break,
            }
        }
        let inputs: Vec<I> = jobs.iter().map(|j| j.input.clone()).collect();
        match run(&mut f, inputs, counters) {
            Ok(outs) => {
                for (job, out) in jobs.into_iter().zip(outs) {
                    // A caller that gave up is no error.
                    let _ = job.reply.send(Ok(out));
                }
            }
            Err(_) if jobs.len() > 1 => {
                // Find the culprit: each input alone, so only a bad input's caller gets an error.
                for job in jobs {
                    let out = run(&mut f, vec![job.input], counters).map(|mut v| v.remove(0));
                    let _ = job.reply.send(out);
                }
            }
            Err(e) => {
                let _ = jobs.remove(0).reply.send(Err(e));
            }
        }
    }
}

/// One call of `f`, with its output count checked and a panic turned into an error.
fn run<I, O, F>(f: &mut F, inputs: Vec<I>, counters: &Counters) -> Result<Vec<O>>
where
    F: FnMut(Vec<I>) -> Result<Vec<O>>,
{
    let n = inputs.len();
    counters.calls.fetch_add(1, Ordering::Relaxed);
    let out = catch_unwind(AssertUnwindSafe(|| f(inputs)))
        .unwrap_or_else(|_| Err(CoreError::Inference { message: "the model call panicked".into() }))?;
    if out.len() != n {
        return Err(CoreError::Inference { message: format!("{} outputs for a batch of {n}", out.len()) });
    }
    counters.inputs.fetch_add(n as u64, Ordering::Relaxed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Barrier, Mutex};

    fn doubler(policy: BatchPolicy, sizes: Arc<Mutex<Vec<usize>>>, hold: Duration) -> MicroBatcher<i64, i64> {
        MicroBatcher::spawn("test", policy, move |xs: Vec<i64>| {
            sizes.lock().unwrap().push(xs.len());
            std::thread::sleep(hold);
            if xs.contains(&-1) {
                return Err(CoreError::Tokenizer { message: "bad input".into() });
            }
            if xs.contains(&-2) {
                panic!("boom");
            }
            Ok(xs.iter().map(|x| x * 2).collect())
        })
    }

    fn concurrent(b: &Arc<MicroBatcher<i64, i64>>, inputs: Vec<i64>) -> Vec<(i64, Result<i64>)> {
        let barrier = Arc::new(Barrier::new(inputs.len()));
        let handles: Vec<_> = inputs
            .into_iter()
            .map(|x| {
                let (b, barrier) = (b.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (x, b.call(x))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn concurrent_calls_share_batches_and_each_gets_its_own_row() {
        let sizes = Arc::new(Mutex::new(vec![]));
        let b = Arc::new(doubler(BatchPolicy::new(8, Duration::from_millis(100)), sizes.clone(), Duration::ZERO));
        let out = concurrent(&b, (0..24).collect());
        for (x, r) in out {
            assert_eq!(r.unwrap(), x * 2, "input {x} got someone else's row");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 24);
        assert!(sizes.iter().all(|&s| s <= 8), "a batch went over max_batch: {sizes:?}");
        assert!(sizes.len() < 24, "nothing was batched: {sizes:?}");
        assert_eq!(b.stats(), BatchStats { calls: sizes.len() as u64, inputs: 24 });
    }

    #[test]
    fn zero_wait_batches_only_what_queued_during_the_previous_call() {
        let sizes = Arc::new(Mutex::new(vec![]));
        let b = doubler(BatchPolicy::new(8, Duration::ZERO), sizes.clone(), Duration::ZERO);
        // Sequential calls never wait for company: each is its own batch, answered at once.
        let t = Instant::now();
        for x in 0..5 {
            assert_eq!(b.call(x).unwrap(), 2 * x);
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(*sizes.lock().unwrap(), vec![1; 5]);

        // While one slow call runs, the others queue and go together.
        let sizes = Arc::new(Mutex::new(vec![]));
        let b = Arc::new(doubler(BatchPolicy::new(8, Duration::ZERO), sizes.clone(), Duration::from_millis(300)));
        let out = concurrent(&b, (0..6).collect());
        assert!(out.iter().all(|(x, r)| *r.as_ref().unwrap() == x * 2));
        assert!(sizes.lock().unwrap().iter().any(|&s| s > 1), "{:?}", sizes.lock().unwrap());
    }

    #[test]
    fn a_bad_input_fails_alone_and_a_panic_does_not_kill_the_worker() {
        let sizes = Arc::new(Mutex::new(vec![]));
        let b = Arc::new(doubler(BatchPolicy::new(16, Duration::from_millis(50)), sizes, Duration::ZERO));
        let out = concurrent(&b, vec![1, 2, -1, 3, -2, 4]);
        for (x, r) in out {
            match x {
                -1 => assert!(matches!(r, Err(CoreError::Tokenizer { .. })), "{r:?}"),
                -2 => assert!(matches!(r, Err(CoreError::Inference { .. })), "{r:?}"),
                _ => assert_eq!(r.unwrap(), x * 2),
            }
        }
        // The worker survived the panic.
        assert_eq!(b.call(21).unwrap(), 42);
    }

    #[test]
    fn a_wrong_output_count_is_an_error_not_a_misrouted_row() {
        let b = MicroBatcher::spawn("short", BatchPolicy::new(4, Duration::ZERO), |xs: Vec<i64>| Ok(xs[1..].to_vec()));
        assert!(matches!(b.call(7), Err(CoreError::Inference { .. })));
    }

    #[test]
    fn policy_is_clamped() {
        let p = BatchPolicy::new(0, Duration::from_secs(3600));
        assert_eq!((p.max_batch, p.max_wait), (1, BatchPolicy::MAX_WAIT));
        assert_eq!(BatchPolicy::new(usize::MAX, Duration::ZERO).max_batch, BatchPolicy::MAX_BATCH);
    }

    #[test]
    fn dropping_the_batcher_stops_the_worker() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        struct Tell(std::sync::mpsc::Sender<()>);
        impl Drop for Tell {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let tell = Tell(tx);
        let b = MicroBatcher::spawn("drop", BatchPolicy::new(2, Duration::ZERO), move |xs: Vec<i64>| {
            let _keep = &tell; // the closure (and so `tell`) lives as long as the worker
            Ok(xs)
        });
        assert_eq!(b.call(5).unwrap(), 5);
        drop(b);
        rx.recv_timeout(Duration::from_secs(10)).expect("the worker exited and dropped its closure");
    }
}
