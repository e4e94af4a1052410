//! Delivery: one task takes events off the handle's queue, writes each as a JSON line once, and
//! hands the line to every sink's own bounded buffer; each sink runs in a task of its own, so a
//! slow or unreachable one (the pool down, the object store refusing) fills its own buffer and
//! drops from it, counted, while the others go on.
//!
//! A sink takes lines in batches ([`Sink::fits`], [`Sink::due_at`]) and delivers a batch whole
//! or not at all, retrying with backoff until it goes through. At shutdown the queue is drained,
//! each sink delivers what it holds (the object store its partial object), and one that still
//! fails after [`SHUTDOWN_GRACE`] gives up, counting what it held as dropped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::event::Record;

/// Events each sink may hold beyond the batch it is delivering: minutes of a busy gateway's
/// events (a few hundred bytes each, so a few MiB), enough to ride out a pool or object store
/// restart; past it the newest are dropped and counted.
pub const SINK_BUFFER_EVENTS: usize = 10_000;

/// The first wait after a failed delivery, doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Long enough not to hammer a store that is down, short enough that delivery resumes within
/// half a minute of its return.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long the sinks get, once shutdown starts, to deliver what they hold: well within the
/// 30 s a process manager (Kubernetes' default grace period) waits after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkName {
    Log,
    Topic,
    S3,
}

impl SinkName {
    pub const ALL: [SinkName; 3] = [SinkName::Log, SinkName::Topic, SinkName::S3];

    /// The `sink` label.
    pub fn label(self) -> &'static str {
        match self {
            SinkName::Log => "log",
            SinkName::Topic => "topic",
            SinkName::S3 => "s3",
        }
    }
}

/// What each sink delivered and dropped since the gateway started.
#[derive(Debug, Default)]
pub(super) struct SinkCounts {
    delivered: [AtomicU64; 3],
    dropped: [AtomicU64; 3],
}

impl SinkCounts {
    pub(super) fn dropped(&self, sink: SinkName, n: u64) {
        self.dropped[sink as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn delivered(&self, sink: SinkName, n: u64) {
        self.delivered[sink as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// (delivered, dropped) of `sink`.
    pub(super) fn of(&self, sink: SinkName) -> (u64, u64) {
        (
            self.delivered[sink as usize].load(Ordering::Relaxed),
            self.dropped[sink as usize].load(Ordering::Relaxed),
        )
    }
}

/// One event as the sinks get it.
#[derive(Debug, Clone)]
pub(super) struct Line {
    /// The event's time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub cluster: Option<Uuid>,
    /// The JSON object and its newline.
    pub bytes: Bytes,
}

impl Line {
    pub(super) fn of(record: &Record) -> Line {
        Line {
            time_ms: record.time,
            cluster: record.cluster,
            bytes: Bytes::from(record.line()),
        }
    }

    /// The JSON object without its newline.
    pub(super) fn json(&self) -> Bytes {
        self.bytes.slice(..self.bytes.len().saturating_sub(1))
    }
}

/// Lines taken together for one delivery.
#[derive(Debug)]
pub(super) struct Batch {
    pub lines: Vec<Line>,
    pub bytes: usize,
    /// When its first line was taken.
    pub started: Instant,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            lines: Vec::new(),
            bytes: 0,
            started: Instant::now(),
        }
    }

    pub(super) fn push(&mut self, line: Line) {
        if self.lines.is_empty() {
            self.started = Instant::now();
        }
        self.bytes += line.bytes.len();
        self.lines.push(line);
    }

    fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
    }
}

/// A destination of audit lines. Implementations must deliver a batch whole or fail it whole
/// (a failed batch is delivered again, so a sink that cannot be sure may deliver a line twice:
/// readers tell duplicates by the event's `id`), and must not wait forever: every attempt ends,
/// in success or an error, within a bounded time.
pub(super) trait Sink: Send + 'static {
    const NAME: SinkName;

    /// Whether `line` may join `batch` (not empty) in one delivery.
    fn fits(&self, batch: &Batch, line: &Line) -> bool;

    /// When `batch` is to be delivered if nothing fills it first: at once by default.
    fn due_at(&self, batch: &Batch) -> Instant {
        batch.started
    }

    /// Delivers the batch, or says why not.
    fn deliver(&mut self, batch: &Batch) -> impl Future<Output = Result<(), String>> + Send;
}

/// Whether the gateway is shutting down, and until when the sinks may still try.
pub(super) type Stopping = watch::Receiver<Option<Instant>>;

/// Runs `sink` until its buffer is closed and what it held is delivered (or given up on).
pub(super) async fn run<S: Sink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Line>,
    counts: Arc<SinkCounts>,
    mut stopping: Stopping,
) {
    let mut batch = Batch::new();
    // A line that did not fit the batch being filled: the first of the next.
    let mut carry: Option<Line> = None;
    let mut open = true;
    let mut retry = Retry::default();
    loop {
        if batch.lines.is_empty() {
            let next = match carry.take() {
                Some(line) => Some(line),
                None if open => rx.recv().await,
                None => None,
            };
            match next {
                Some(line) => batch.push(line),
                None => break,
            }
        }
        while carry.is_none() {
            match rx.try_recv() {
                Ok(line) if sink.fits(&batch, &line) => batch.push(line),
                Ok(line) => carry = Some(line),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if carry.is_none() && open {
            let due = sink.due_at(&batch);
            if due > Instant::now() {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(line) if sink.fits(&batch, &line) => batch.push(line),
                        Some(line) => carry = Some(line),
                        None => open = false,
                    },
                    () = tokio::time::sleep_until(due) => {}
                    // Shutdown: what is held goes now rather than at its time.
                    () = changed(&mut stopping) => {}
                }
                if stopping.borrow().is_none() {
                    continue;
                }
            }
        }
        let delivered = retry.deliver(&mut sink, &batch, &mut stopping).await;
        let n = batch.lines.len() as u64;
        if delivered {
            counts.delivered(S::NAME, n);
        } else {
            counts.dropped(S::NAME, n);
            // Given up at shutdown: nothing more will go through either.
            let mut left = carry.take().map_or(0, |_| 1);
            while rx.recv().await.is_some() {
                left += 1;
            }
            counts.dropped(S::NAME, left);
            return;
        }
        batch.clear();
    }
}

/// Returns when shutdown starts (or its deadline changes); never once the sender is gone, as
/// nothing changes after that.
async fn changed(stopping: &mut Stopping) {
    if stopping.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Attempts and their backoff, with the failure logged once per outage.
#[derive(Default)]
struct Retry {
    failures: u32,
}

impl Retry {
    /// Delivers `batch`, retrying until it goes through (true) or shutdown's grace is over
    /// (false).
    async fn deliver<S: Sink>(
        &mut self,
        sink: &mut S,
        batch: &Batch,
        stopping: &mut Stopping,
    ) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let deadline = *stopping.borrow();
            let attempt = sink.deliver(batch);
            let outcome = match deadline {
                None => attempt.await,
                Some(deadline) => tokio::time::timeout_at(deadline, attempt)
                    .await
                    .unwrap_or_else(|_| Err("shutdown grace over".into())),
            };
            match outcome {
                Ok(()) => {
                    if self.failures > 0 {
                        tracing::info!(
                            sink = S::NAME.label(),
                            failed_attempts = self.failures,
                            "audit sink delivers again"
                        );
                        self.failures = 0;
                    }
                    return true;
                }
                Err(e) => {
                    self.failures += 1;
                    if self.failures == 1 {
                        tracing::warn!(sink = S::NAME.label(), error = %e, "audit delivery failed; retrying with backoff");
                    } else {
                        tracing::debug!(sink = S::NAME.label(), error = %e, "audit delivery failed again");
                    }
                }
            }
            let deadline = *stopping.borrow();
            let wake = match deadline {
                Some(deadline) if Instant::now() + backoff >= deadline => {
                    tracing::warn!(
                        sink = S::NAME.label(),
                        events = batch.lines.len(),
                        "audit sink still failing at shutdown; its events are dropped"
                    );
                    return false;
                }
                _ => Instant::now() + backoff,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                // Shutdown starting shortens nothing, but the deadline is looked at again.
                () = changed(stopping) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The sinks' buffers, as the dispatcher fills them.
pub(super) struct Outlets {
    pub sinks: Vec<(SinkName, mpsc::Sender<Line>)>,
    pub counts: Arc<SinkCounts>,
}

impl Outlets {
    /// Hands `record` to every sink; a full buffer drops it for that sink, counted.
    fn fan_out(&self, record: &Record) {
        let line = Line::of(record);
        for (name, tx) in &self.sinks {
            if tx.try_send(line.clone()).is_err() {
                self.counts.dropped(*name, 1);
            }
        }
    }
}

/// Takes events off the queue until `stop`, then what was emitted before it, and closes the
/// sinks' buffers (dropping `outlets`), after telling them how long they have.
pub(super) async fn dispatch(
    mut queue: mpsc::Receiver<Arc<Record>>,
    outlets: Outlets,
    stopping: watch::Sender<Option<Instant>>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            record = queue.recv() => match record {
                Some(record) => outlets.fan_out(&record),
                None => break,
            },
        }
    }
    let _ = stopping.send(Some(Instant::now() + SHUTDOWN_GRACE));
    // Emitting from now on fails fast and is counted as dropped; what is queued still goes.
    queue.close();
    while let Some(record) = queue.recv().await {
        outlets.fan_out(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::audit::event::{Event, EventType};

    fn line(n: i64) -> Line {
        Line::of(&Record::new(
            Event::new(EventType::PoolScaled, "resize"),
            "s".into(),
            n,
        ))
    }

    /// A sink into a real file, in batches of at most `max` lines.
    struct FileOf {
        path: std::path::PathBuf,
        max: usize,
        fail_first: u32,
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Sink for FileOf {
        const NAME: SinkName = SinkName::Log;

        fn fits(&self, batch: &Batch, _: &Line) -> bool {
            batch.lines.len() < self.max
        }

        async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
            if self.fail_first > 0 {
                self.fail_first -= 1;
                return Err("not yet".into());
            }
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| e.to_string())?;
            for l in &batch.lines {
                f.write_all(&l.bytes).map_err(|e| e.to_string())?;
            }
            self.batches.lock().unwrap().push(batch.lines.len());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lines_go_in_batches_and_failures_are_retried() {
        let dir = tempdir();
        let path = dir.join("out.jsonl");
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = FileOf {
            path: path.clone(),
            max: 3,
            fail_first: 2,
            batches: batches.clone(),
        };
        let (tx, rx) = mpsc::channel(100);
        for n in 0..7 {
            tx.try_send(line(n)).unwrap();
        }
        drop(tx);
        let counts = Arc::new(SinkCounts::default());
        let (_stop_tx, stopping) = watch::channel(None);
        run(sink, rx, counts.clone(), stopping).await;
        assert_eq!(*batches.lock().unwrap(), [3, 3, 1]);
        assert_eq!(counts.of(SinkName::Log), (7, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        let times: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["time"].to_string())
            .collect();
        assert_eq!(times.len(), 7);
        assert!(
            times[0].contains(".000Z") && times[6].contains(".006Z"),
            "{times:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_failing_at_shutdown_gives_up_and_counts_its_drops() {
        let dir = tempdir();
        let sink = FileOf {
            path: dir.join("never.jsonl"),
            max: 2,
            fail_first: u32::MAX,
            batches: Default::default(),
        };
        let (tx, rx) = mpsc::channel(100);
        for n in 0..5 {
            tx.try_send(line(n)).unwrap();
        }
        let counts = Arc::new(SinkCounts::default());
        let (stop_tx, stopping) = watch::channel(None);
        let task = tokio::spawn(run(sink, rx, counts.clone(), stopping));
        // It retries while the gateway runs...
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!task.is_finished());
        assert_eq!(counts.of(SinkName::Log), (0, 0));
        // ...and gives up once shutdown's grace is over.
        stop_tx.send(Some(Instant::now() + SHUTDOWN_GRACE)).unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(counts.of(SinkName::Log), (0, 5));
        assert!(!dir.join("never.jsonl").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_full_buffer_drops_for_that_sink_only() {
        let (fast_tx, mut fast_rx) = mpsc::channel(10);
        let (slow_tx, _slow_rx) = mpsc::channel(2);
        let counts = Arc::new(SinkCounts::default());
        let outlets = Outlets {
            sinks: vec![(SinkName::Log, fast_tx), (SinkName::S3, slow_tx)],
            counts: counts.clone(),
        };
        let (queue_tx, queue_rx) = mpsc::channel(10);
        for n in 0..5 {
            queue_tx
                .try_send(Arc::new(Record::new(
                    Event::new(EventType::PoolScaled, "resize"),
                    "s".into(),
                    n,
                )))
                .unwrap();
        }
        let (stopping, _) = watch::channel(None);
        // Stopped at once: what was queued before the stop still goes out.
        dispatch(queue_rx, outlets, stopping, std::future::ready(())).await;
        assert_eq!(counts.of(SinkName::S3), (0, 3), "two fit its buffer");
        assert_eq!(counts.of(SinkName::Log), (0, 0));
        let mut got = 0;
        while fast_rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 5);
        assert!(
            queue_tx
                .try_send(Arc::new(Record::new(
                    Event::new(EventType::PoolScaled, "resize"),
                    "s".into(),
                    9,
                )))
                .is_err(),
            "the queue is closed once delivery stopped"
        );
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-audit-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
