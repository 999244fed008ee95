//! The model worker both handles share: one std thread owns the model, callers
//! queue tokenized requests, and whatever is queued when the worker is free
//! becomes its next batch, up to a token budget (how text-embeddings-inference
//! batches). Bounded: a full queue refuses at once ([`ApiError::Busy`]); a worker
//! that has ended refuses at once ([`ApiError::Stopped`]) and every request it held
//! is answered with `Stopped` (its reply channel is dropped), so no caller waits
//! on a worker that is gone.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dartboard_embeddings::EmbedError;
use tracing::Span;

use crate::ApiError;

/// How the worker batches and how many requests may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Token budget of one batch built from queued requests: the worker takes
    /// queued requests in order while their tokens (special tokens and prompt
    /// included, unpadded) fit. A request over the budget runs alone. Default 16384.
    pub max_batch_tokens: usize,
    /// Requests that may wait at most; beyond, a call fails at once with
    /// [`ApiError::Busy`]. Default 512. Values below 1 count as 1.
    pub max_queued: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { max_batch_tokens: 16384, max_queued: 512 }
    }
}

/// One batch the worker ran (for metrics): reported to the observer set with
/// `on_batch` after each call into the model. The model splits a batch into
/// forward passes of at most its batch size (`EMBEDDING_BATCH_SIZE`) texts and a
/// padded-token cap, so a large batch is several passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEvent {
    /// Requests in the batch.
    pub requests: usize,
    /// Texts (or pairs) in the batch.
    pub texts: usize,
    /// Their tokens, unpadded.
    pub tokens: usize,
    /// How long the model took.
    pub elapsed: Duration,
}

/// Receives a [`BatchEvent`] per batch, on the worker thread: keep it quick.
pub type BatchObserver = Arc<dyn Fn(&BatchEvent) + Send + Sync>;

/// What a worker runs: a model that takes several callers' tokenized groups at
/// once and returns one output per group, in order.
pub(crate) trait Engine: Send + 'static {
    /// One caller's tokenized input.
    type Group: Send + 'static;
    /// One caller's result.
    type Output: Send + 'static;
    /// Runs `groups` together.
    fn run(&self, groups: &[&Self::Group]) -> Result<Vec<Self::Output>, EmbedError>;
}

type Answer<T> = Result<T, ApiError>;

enum Reply<T> {
    /// A thread blocked in `recv`.
    Blocking(mpsc::SyncSender<Answer<T>>),
    /// A future awaiting the receiver (dropped if the caller gave up).
    Async(tokio::sync::oneshot::Sender<Answer<T>>),
}

impl<T> Reply<T> {
    fn send(self, answer: Answer<T>) {
        // A caller that is gone no longer wants the answer.
        match self {
            Reply::Blocking(tx) => drop(tx.send(answer)),
            Reply::Async(tx) => drop(tx.send(answer)),
        }
    }

    fn abandoned(&self) -> bool {
        matches!(self, Reply::Async(tx) if tx.is_closed())
    }
}

struct Job<E: Engine> {
    group: E::Group,
    tokens: usize,
    texts: usize,
    /// The caller's span: the worker's span for this request is its child.
    span: Span,
    queued_at: Instant,
    reply: Reply<E::Output>,
}

struct State<E: Engine> {
    jobs: VecDeque<Job<E>>,
    /// False once shut down or once the worker has ended.
    accepting: bool,
}

struct Queue<E: Engine> {
    state: Mutex<State<E>>,
    wake: Condvar,
    options: BatchOptions,
    observer: RwLock<Option<BatchObserver>>,
    #[cfg(test)]
    gate: test_gate::Gate,
}

impl<E: Engine> Queue<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        // The lock is never held across the model or a caller's code, so a poisoned
        // lock (a panic elsewhere) leaves the queue consistent. Keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for work; `None` once shut down with nothing left.
    fn next_batch(&self) -> Option<Vec<Job<E>>> {
        let mut state = self.lock();
        loop {
            // Async callers that gave up (a dropped future) cost nothing.
            state.jobs.retain(|job| !job.reply.abandoned());
            if !state.jobs.is_empty() {
                break;
            }
            if !state.accepting {
                return None;
            }
            state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let mut batch = Vec::new();
        let mut tokens = 0usize;
        while let Some(job) = state.jobs.front() {
            // The first request always goes, however long; then in order while
            // they fit (a later small one never overtakes a waiting large one).
            if !batch.is_empty() && tokens + job.tokens > self.options.max_batch_tokens {
                break;
            }
            tokens += job.tokens;
            batch.extend(state.jobs.pop_front());
        }
        Some(batch)
    }
}

/// Marks the queue closed when the worker ends, normally or by a panic, and drops
/// the requests still queued so their callers get [`ApiError::Stopped`].
struct EndGuard<E: Engine>(Arc<Queue<E>>);

impl<E: Engine> Drop for EndGuard<E> {
    fn drop(&mut self) {
        let orphans = {
            let mut state = self.0.lock();
            state.accepting = false;
            std::mem::take(&mut state.jobs)
        };
        drop(orphans);
        self.0.wake.notify_all();
    }
}

/// A running worker: the submitting side. Dropping the last [`Worker`] (the last
/// clone of a handle) stops the thread after the requests already queued.
pub(crate) struct Worker<E: Engine> {
    queue: Arc<Queue<E>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<E: Engine> Worker<E> {
    /// Starts the thread `name`, which owns `engine`.
    pub(crate) fn start(name: &str, engine: E, options: BatchOptions) -> Result<Self, ApiError> {
        let options =
            BatchOptions { max_batch_tokens: options.max_batch_tokens.max(1), max_queued: options.max_queued.max(1) };
        let queue = Arc::new(Queue {
            state: Mutex::new(State { jobs: VecDeque::new(), accepting: true }),
            wake: Condvar::new(),
            options,
            observer: RwLock::new(None),
            #[cfg(test)]
            gate: test_gate::Gate::default(),
        });
        let worker_queue = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || work(engine, worker_queue))
            .map_err(|source| ApiError::Spawn { name: name.to_owned(), source })?;
        Ok(Worker { queue, thread: Mutex::new(Some(thread)) })
    }

    /// Sets the observer of batches (replacing any earlier one).
    pub(crate) fn on_batch(&self, observer: BatchObserver) {
        *self.queue.observer.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(observer);
    }

    /// Requests waiting now (not counting the batch running).
    pub(crate) fn queue_depth(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    /// Fails at once when a request could not be queued now, before a caller
    /// spends time tokenizing it.
    pub(crate) fn check_room(&self) -> Result<(), ApiError> {
        let state = self.queue.lock();
        if !state.accepting {
            return Err(ApiError::Stopped);
        }
        if state.jobs.len() >= self.queue.options.max_queued {
            return Err(ApiError::Busy { queued: state.jobs.len() });
        }
        Ok(())
    }

    fn enqueue(&self, group: E::Group, tokens: usize, texts: usize, reply: Reply<E::Output>) -> Result<(), ApiError> {
        let mut state = self.queue.lock();
        if !state.accepting {
            return Err(ApiError::Stopped);
        }
        if state.jobs.len() >= self.queue.options.max_queued {
            return Err(ApiError::Busy { queued: state.jobs.len() });
        }
        state.jobs.push_back(Job { group, tokens, texts, span: Span::current(), queued_at: Instant::now(), reply });
        drop(state);
        self.queue.wake.notify_one();
        Ok(())
    }

    /// Queues `group` and waits for its result on this thread.
    pub(crate) fn call(&self, group: E::Group, tokens: usize, texts: usize) -> Result<E::Output, ApiError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(group, tokens, texts, Reply::Blocking(tx))?;
        // A dropped sender means the worker ended before answering.
        rx.recv().unwrap_or(Err(ApiError::Stopped))
    }

    /// Queues `group`; the returned future resolves when the worker answers,
    /// without blocking the thread that polls it.
    pub(crate) fn call_async(
        &self,
        group: E::Group,
        tokens: usize,
        texts: usize,
    ) -> Result<impl std::future::Future<Output = Result<E::Output, ApiError>>, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(group, tokens, texts, Reply::Async(tx))?;
        Ok(async move { rx.await.unwrap_or(Err(ApiError::Stopped)) })
    }

    /// Stops accepting requests, lets the worker finish those already queued, and
    /// waits for it to end. Later calls fail with [`ApiError::Stopped`].
    pub(crate) fn shutdown(&self) {
        self.queue.lock().accepting = false;
        self.queue.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = thread {
            // Never join from the worker itself (an observer calling shutdown).
            if thread.thread().id() != std::thread::current().id() {
                // A worker that panicked has already answered its callers (Stopped).
                let _ = thread.join();
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn gate(&self) -> &test_gate::Gate {
        &self.queue.gate
    }
}

impl<E: Engine> Drop for Worker<E> {
    fn drop(&mut self) {
        // The thread finishes what is queued, then ends and drops the model; not
        // joined here, so dropping a handle never waits on a forward pass.
        self.queue.lock().accepting = false;
        self.queue.wake.notify_all();
    }
}

fn work<E: Engine>(engine: E, queue: Arc<Queue<E>>) {
    let _end = EndGuard(Arc::clone(&queue));
    while let Some(jobs) = queue.next_batch() {
        #[cfg(test)]
        queue.gate.pass();
        run_batch(&engine, &queue, jobs);
    }
}

fn run_batch<E: Engine>(engine: &E, queue: &Queue<E>, jobs: Vec<Job<E>>) {
    let texts: usize = jobs.iter().map(|j| j.texts).sum();
    let tokens: usize = jobs.iter().map(|j| j.tokens).sum();
    // Each request gets a span here that is a child of its caller's span (created
    // with the caller's subscriber, which may not be this thread's default); the
    // passes run inside one span for the batch.
    let request_spans: Vec<Span> = jobs
        .iter()
        .map(|job| {
            let queued_ms = job.queued_at.elapsed().as_secs_f64() * 1e3;
            job.span
                .with_subscriber(|(_, dispatch)| {
                    tracing::dispatcher::with_default(dispatch, || {
                        tracing::info_span!(parent: &job.span, "model_batch", requests = jobs.len(), texts, tokens, queued_ms)
                    })
                })
                .unwrap_or_else(Span::none)
        })
        .collect();
    let batch_span = tracing::debug_span!(parent: None, "model_worker_batch", requests = jobs.len(), texts, tokens);
    for span in &request_spans {
        batch_span.follows_from(span);
    }
    let _entered = batch_span.enter();
    let groups: Vec<&E::Group> = jobs.iter().map(|j| &j.group).collect();
    let result = observed(queue, jobs.len(), texts, tokens, || engine.run(&groups));
    match result {
        Ok(outputs) if outputs.len() == jobs.len() => {
            for (job, output) in jobs.into_iter().zip(outputs) {
                job.reply.send(Ok(output));
            }
        }
        Ok(outputs) => {
            // An engine bug; answer rather than hang.
            tracing::error!(expected = jobs.len(), got = outputs.len(), "model returned the wrong number of results");
            for job in jobs {
                job.reply.send(Err(ApiError::Stopped));
            }
        }
        Err(err) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                job.reply.send(Err(ApiError::Model(err)));
            }
        }
        Err(_) => {
            // One request's input (say, a text the model turns into NaN) must not
            // fail the others, and each caller's error must name its own text: run
            // them one at a time.
            for job in jobs {
                let answer = observed(queue, 1, job.texts, job.tokens, || engine.run(&[&job.group]))
                    .map_err(ApiError::Model)
                    .and_then(|mut outputs| outputs.pop().ok_or(ApiError::Stopped));
                job.reply.send(answer);
            }
        }
    }
    drop(request_spans);
}

fn observed<E: Engine, T>(
    queue: &Queue<E>,
    requests: usize,
    texts: usize,
    tokens: usize,
    run: impl FnOnce() -> T,
) -> T {
    let started = Instant::now();
    let out = run();
    let event = BatchEvent { requests, texts, tokens, elapsed: started.elapsed() };
    let observer = queue.observer.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    if let Some(observer) = observer {
        observer(&event);
    }
    out
}

#[cfg(test)]
pub(crate) mod test_gate {
    //! Holds the worker between taking a batch and running it, so tests can fill
    //! the queue deterministically.
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Default)]
    pub(crate) struct Gate {
        state: Mutex<GateState>,
        changed: Condvar,
    }

    #[derive(Default)]
    struct GateState {
        closed: bool,
        /// Batches the worker has taken so far.
        taken: usize,
    }

    impl Gate {
        pub(crate) fn close(&self) {
            self.state.lock().unwrap().closed = true;
        }

        pub(crate) fn open(&self) {
            self.state.lock().unwrap().closed = false;
            self.changed.notify_all();
        }

        /// Batches the worker has taken so far.
        pub(crate) fn taken(&self) -> usize {
            self.state.lock().unwrap().taken
        }

        /// Waits (at most 60 s) until the worker has taken `n` batches.
        pub(crate) fn wait_taken(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut state = self.state.lock().unwrap();
            while state.taken < n {
                let left = deadline.checked_duration_since(Instant::now()).expect("the worker took no batch in 60 s");
                state = self.changed.wait_timeout(state, left).unwrap().0;
            }
        }

        pub(crate) fn pass(&self) {
            let mut state = self.state.lock().unwrap();
            state.taken += 1;
            self.changed.notify_all();
            while state.closed {
                state = self.changed.wait(state).unwrap();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles each number; a group holding 666 panics (a model bug), one holding
    /// 13 fails (bad input).
    struct Doubler;

    impl Engine for Doubler {
        type Group = Vec<u32>;
        type Output = Vec<u32>;

        fn run(&self, groups: &[&Vec<u32>]) -> Result<Vec<Vec<u32>>, EmbedError> {
            if groups.iter().any(|g| g.contains(&666)) {
                panic!("the model broke");
            }
            if let Some(group) = groups.iter().find(|g| g.contains(&13)) {
                let index = group.iter().position(|&x| x == 13).unwrap_or_default();
                return Err(EmbedError::NonFinite { model: "doubler".into(), index });
            }
            Ok(groups.iter().map(|g| g.iter().map(|x| x * 2).collect()).collect())
        }
    }

    fn start(max_batch_tokens: usize, max_queued: usize) -> Arc<Worker<Doubler>> {
        Arc::new(Worker::start("test-worker", Doubler, BatchOptions { max_batch_tokens, max_queued }).unwrap())
    }

    /// Calls on another thread; the group's token count is its length.
    fn call_on_thread(worker: &Arc<Worker<Doubler>>, group: Vec<u32>) -> std::thread::JoinHandle<Answer<Vec<u32>>> {
        let worker = Arc::clone(worker);
        std::thread::spawn(move || {
            let len = group.len();
            worker.call(group, len, len)
        })
    }

    /// Waits (at most 60 s) until `n` requests are queued; on failure opens the
    /// gate first, so the callers held behind it end.
    fn wait_depth(worker: &Worker<Doubler>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while worker.queue_depth() < n {
            if Instant::now() > deadline {
                worker.gate().open();
                panic!("{n} requests were not queued in 60 s ({} are)", worker.queue_depth());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_queued_requests_still_complete() {
        let worker = start(100, 2);
        worker.gate().close();
        let running = call_on_thread(&worker, vec![1]);
        worker.gate().wait_taken(1);
        let queued = [call_on_thread(&worker, vec![2]), call_on_thread(&worker, vec![3])];
        wait_depth(&worker, 2);
        let started = Instant::now();
        assert!(matches!(worker.call(vec![4], 1, 1), Err(ApiError::Busy { queued: 2 })));
        assert!(matches!(worker.check_room(), Err(ApiError::Busy { queued: 2 })));
        assert!(started.elapsed() < Duration::from_secs(5), "Busy must not wait for the worker");
        worker.gate().open();
        assert_eq!(running.join().unwrap().unwrap(), vec![2]);
        let [a, b] = queued;
        assert_eq!((a.join().unwrap().unwrap(), b.join().unwrap().unwrap()), (vec![4], vec![6]));
        // Room again once the queue drained.
        assert_eq!(worker.call(vec![5], 1, 1).unwrap(), vec![10]);
    }

    #[test]
    fn what_queued_while_the_model_was_busy_forms_the_next_batch_within_the_token_budget() {
        let worker = start(7, 16);
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        worker.on_batch(Arc::new(move |e: &BatchEvent| seen.lock().unwrap().push((e.requests, e.texts, e.tokens))));
        worker.gate().close();
        let first = call_on_thread(&worker, vec![1; 9]);
        worker.gate().wait_taken(1);
        // Queued in this order while the first batch holds the worker: 3 + 3 fit
        // the budget of 7, the third does not; the over-budget one runs alone.
        let mut rest = Vec::new();
        for (i, group) in [vec![2; 3], vec![3; 3], vec![4; 3], vec![5; 8]].into_iter().enumerate() {
            rest.push(call_on_thread(&worker, group));
            wait_depth(&worker, i + 1);
        }
        worker.gate().open();
        assert_eq!(first.join().unwrap().unwrap(), vec![2; 9]);
        let answers: Vec<Vec<u32>> = rest.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        assert_eq!(answers, vec![vec![4; 3], vec![6; 3], vec![8; 3], vec![10; 8]], "each caller gets its own rows");
        assert_eq!(*events.lock().unwrap(), vec![(1, 9, 9), (2, 6, 6), (1, 3, 3), (1, 8, 8)]);
    }

    #[test]
    fn a_failing_request_in_a_batch_fails_alone_with_its_own_error() {
        let worker = start(100, 16);
        worker.gate().close();
        let first = call_on_thread(&worker, vec![1]);
        worker.gate().wait_taken(1);
        let good = call_on_thread(&worker, vec![2, 3]);
        wait_depth(&worker, 1);
        let bad = call_on_thread(&worker, vec![5, 13]);
        wait_depth(&worker, 2);
        worker.gate().open();
        assert_eq!(first.join().unwrap().unwrap(), vec![2]);
        assert_eq!(good.join().unwrap().unwrap(), vec![4, 6]);
        match bad.join().unwrap() {
            Err(ApiError::Model(EmbedError::NonFinite { index: 1, .. })) => {}
            other => panic!("expected the bad request's own error, got {other:?}"),
        }
    }

    #[test]
    fn a_worker_that_ended_answers_stopped_never_hangs() {
        let worker = start(100, 16);
        worker.gate().close();
        let doomed = call_on_thread(&worker, vec![666]);
        worker.gate().wait_taken(1);
        let behind = call_on_thread(&worker, vec![1]);
        wait_depth(&worker, 1);
        worker.gate().open();
        assert!(matches!(doomed.join().unwrap(), Err(ApiError::Stopped)), "the batch that broke the worker");
        assert!(matches!(behind.join().unwrap(), Err(ApiError::Stopped)), "a request queued behind it");
        assert!(matches!(worker.call(vec![1], 1, 1), Err(ApiError::Stopped)));
        assert!(matches!(worker.check_room(), Err(ApiError::Stopped)));
    }

    #[test]
    fn shutdown_finishes_the_queue_then_refuses() {
        let worker = start(1, 16);
        worker.gate().close();
        let first = call_on_thread(&worker, vec![1]);
        worker.gate().wait_taken(1);
        let queued = call_on_thread(&worker, vec![2]);
        wait_depth(&worker, 1);
        let stopper = {
            let worker = Arc::clone(&worker);
            std::thread::spawn(move || worker.shutdown())
        };
        // Refused once shutdown has begun (it waits for the worker to end).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(worker.check_room(), Err(ApiError::Stopped)) {
            assert!(Instant::now() < deadline, "shutdown did not close the queue");
            std::thread::sleep(Duration::from_millis(1));
        }
        worker.gate().open();
        stopper.join().unwrap();
        assert_eq!(first.join().unwrap().unwrap(), vec![2]);
        assert_eq!(queued.join().unwrap().unwrap(), vec![4], "queued before shutdown: still served");
        assert!(matches!(worker.call(vec![1], 1, 1), Err(ApiError::Stopped)));
    }

    #[test]
    fn async_callers_wait_without_blocking_the_runtime_thread() {
        let worker = start(100, 16);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        worker.gate().close();
        let answers = runtime.block_on(async {
            let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for i in 0..4u32 {
                let (worker, queued) = (Arc::clone(&worker), Arc::clone(&queued));
                tasks.push(tokio::spawn(async move {
                    let pending = worker.call_async(vec![i], 1, 1)?;
                    queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    pending.await
                }));
            }
            // Every task runs on this one thread, and all four get queued and wait
            // while the worker is held: a blocking wait would stop at the first.
            for _ in 0..10_000 {
                if queued.load(std::sync::atomic::Ordering::SeqCst) == 4 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(queued.load(std::sync::atomic::Ordering::SeqCst), 4);
            worker.gate().wait_taken(1);
            worker.gate().open();
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap().unwrap());
            }
            answers
        });
        assert_eq!(answers, vec![vec![0], vec![2], vec![4], vec![6]]);
        let stopped = runtime.block_on(async {
            worker.shutdown();
            match worker.call_async(vec![1], 1, 1) {
                Err(err) => Err(err),
                Ok(pending) => pending.await,
            }
        });
        assert!(matches!(stopped, Err(ApiError::Stopped)));
    }
}
