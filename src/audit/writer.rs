//! The [`Auditor`]: chains events and appends them to the central trail,
//! then to the JSON-lines sink if one is configured. One writer task per
//! process takes whatever requests have queued and appends them in one
//! round trip (group commit), so auditing adds one store round trip per
//! batch, not per event. A request is answered only once its events are
//! appended: if that fails, the request fails (fail closed), unless the
//! operator chose [`AuditMode::Degraded`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::log::{AppendOutcome, AuditLog, AuditLogError};
use super::upkeep::{CheckpointSigner, Retention, SignedCheckpoint, cut_point};
use super::{Chained, Head, Record};
use crate::clock::Clock;

/// Most requests appended in one round trip.
const MAX_BATCH: usize = 256;
/// How often an append is retried when other replicas keep appending
/// first.
const MAX_ATTEMPTS: usize = 32;

/// What an audit write that fails does to the operation it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// The operation fails (the default).
    #[default]
    FailClosed,
    /// The operation goes ahead and the failure is logged: for operators
    /// who prefer availability over a complete trail.
    Degraded,
}

/// Why events could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The trail or the sink could not be written.
    #[error("audit trail unavailable: {0}")]
    Unavailable(String),
}

impl From<AuditLogError> for AuditError {
    fn from(error: AuditLogError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// One event a line, to a file (appended to) or stdout. A file is sealed
/// now and then with a signed head line and a head file beside it (see
/// [`file`](super::file)).
pub struct JsonLinesSink {
    out: Mutex<Box<dyn Write + Send>>,
    name: String,
    /// The file, when the sink is one: it gets head lines and a head file.
    path: Option<PathBuf>,
    /// The last event written and the sequence number last sealed.
    written: Mutex<Written>,
}

/// What a sink has written since it was last sealed.
#[derive(Debug, Default)]
struct Written {
    /// The head and time of the last event written.
    last: Option<(Head, String)>,
    /// The sequence number of the last head line.
    sealed: u64,
}

/// Appends events to the trail; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    queue: mpsc::Sender<Batch>,
    seals: mpsc::Sender<oneshot::Sender<()>>,
    mode: AuditMode,
    log: Arc<dyn AuditLog>,
}

struct Batch {
    records: Vec<Record>,
    done: oneshot::Sender<Result<(), AuditError>>,
}

// === impl JsonLinesSink ===

impl JsonLinesSink {
    /// Appends to `path`, creating it (mode 0640) if needed.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        Ok(Self {
            out: Mutex::new(Box::new(file)),
            name: path.display().to_string(),
            path: Some(path.to_owned()),
            written: Mutex::default(),
        })
    }

    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::writer(Box::new(std::io::stdout()), "stdout")
    }

    /// A sink writing into `out` (tests, other destinations).
    pub fn writer(out: Box<dyn Write + Send>, name: &str) -> Self {
        Self {
            out: Mutex::new(out),
            name: name.to_owned(),
            path: None,
            written: Mutex::default(),
        }
    }

    /// Writes the events of `chained`.
    fn write_events(&self, chained: &Chained) -> Result<(), AuditError> {
        self.write(&chained.lines)?;
        if let Some(last) = chained.events.last() {
            lock(&self.written).last = Some((last.head(), last.time.clone()));
        }
        Ok(())
    }

    /// Seals a file that has new events since its last seal: a signed head
    /// line into it, and the same head into its head file.
    fn seal(&self, signer: &dyn CheckpointSigner, now: SystemTime) -> Result<(), AuditError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let (head, time) = {
            let written = lock(&self.written);
            match &written.last {
                Some((head, time)) if head.seq > written.sealed => (head.clone(), time.clone()),
                _ => return Ok(()),
            }
        };
        let token = signer
            .sign_checkpoint(&head, &time, now)
            .map_err(|message| AuditError::Unavailable(format!("signing the head: {message}")))?;
        self.write(&[super::file::Seal::Head(token.clone()).to_line()])?;
        super::file::write_head(path, &token)
            .map_err(|error| AuditError::Unavailable(error.to_string()))?;
        lock(&self.written).sealed = head.seq;
        Ok(())
    }

    fn write(&self, lines: &[String]) -> Result<(), AuditError> {
        let mut text = String::with_capacity(lines.iter().map(|line| line.len() + 1).sum());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let mut out = lock(&self.out);
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|error| AuditError::Unavailable(format!("{}: {error}", self.name)))
    }
}

impl std::fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === impl Auditor ===

impl Auditor {
    /// Starts the writer task (on the current tokio runtime), which also
    /// looks after the trail if `upkeep` is given.
    pub fn start(
        log: Arc<dyn AuditLog>,
        sink: Option<JsonLinesSink>,
        mode: AuditMode,
        upkeep: Option<Upkeep>,
    ) -> Self {
        let (queue, batches) = mpsc::channel(4096);
        let (seals, seal_requests) = mpsc::channel(4);
        let writer = Writer {
            log: log.clone(),
            sink,
            head: None,
            holder: uuid::Uuid::new_v4().to_string(),
        };
        tokio::spawn(writer.run(batches, seal_requests, upkeep));
        Self {
            queue,
            seals,
            mode,
            log,
        }
    }

    /// Seals the JSON-lines file now (at shutdown): a signed head line and
    /// head file for whatever was written since the last seal. Returns
    /// once done; failures are logged.
    pub async fn seal(&self) {
        let (done, sealed) = oneshot::channel();
        if self.seals.send(done).await.is_ok() {
            let _ = sealed.await;
        }
    }

    /// The central trail, to read.
    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }

    /// Records events, in order, and returns once they are in the trail.
    pub async fn record(&self, records: Vec<Record>) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let (done, written) = oneshot::channel();
        let result = match self.queue.send(Batch { records, done }).await {
            Ok(()) => written
                .await
                .unwrap_or_else(|_| Err(AuditError::Unavailable("audit writer stopped".into()))),
            Err(_) => Err(AuditError::Unavailable("audit writer stopped".into())),
        };
        match (result, self.mode) {
            (Err(error), AuditMode::Degraded) => {
                tracing::error!(%error, "audit write failed; going on (degraded mode)");
                Ok(())
            }
            (result, _) => result,
        }
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What the writer looks after besides appending (see
/// [`upkeep`](super::upkeep)): expiries and retention, every `interval`,
/// on one replica at a time.
pub struct Upkeep {
    /// The time expiries and ages are judged by.
    pub clock: Arc<dyn Clock>,
    /// How often.
    pub interval: Duration,
    /// What to keep.
    pub retention: Retention,
    /// Signs the checkpoint retention leaves.
    pub signer: Arc<dyn CheckpointSigner>,
}

impl std::fmt::Debug for Upkeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upkeep")
            .field("interval", &self.interval)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Most expired grants recorded in one append.
const EXPIRED_BATCH: usize = 256;

/// The writer task: appends what requests queue, and looks after the
/// trail between batches.
struct Writer {
    log: Arc<dyn AuditLog>,
    sink: Option<JsonLinesSink>,
    /// The head this writer appended last; re-read after any failure.
    head: Option<Head>,
    /// Who holds the upkeep lease, when it is this writer.
    holder: String,
}

impl Writer {
    async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut seal_requests: mpsc::Receiver<oneshot::Sender<()>>,
        upkeep: Option<Upkeep>,
    ) {
        let mut ticks = upkeep.as_ref().map(|upkeep| {
            let mut ticks = tokio::time::interval(upkeep.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let tick = async {
                match &mut ticks {
                    Some(ticks) => ticks.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(first) => self.write(first, &mut batches).await,
                    None => return,
                },
                _ = tick => {
                    if let Some(upkeep) = &upkeep {
                        if let Err(error) = self.upkeep(upkeep).await {
                            tracing::warn!(%error, "audit upkeep failed; will try again");
                        }
                        self.seal(upkeep);
                    }
                }
                Some(done) = seal_requests.recv() => {
                    // Whatever is queued goes in first.
                    while let Ok(batch) = batches.try_recv() {
                        self.write(batch, &mut batches).await;
                    }
                    if let Some(upkeep) = &upkeep {
                        self.seal(upkeep);
                    }
                    let _ = done.send(());
                }
            }
        }
    }

    /// Appends `first` and whatever else is queued, in one round trip.
    async fn write(&mut self, first: Batch, batches: &mut mpsc::Receiver<Batch>) {
        let mut taken = vec![first];
        while taken.len() < MAX_BATCH {
            match batches.try_recv() {
                Ok(batch) => taken.push(batch),
                Err(_) => break,
            }
        }
        let records: Vec<Record> = taken
            .iter_mut()
            .flat_map(|batch| std::mem::take(&mut batch.records))
            .collect();
        let result = self.append(records).await;
        for batch in taken {
            let _ = batch.done.send(result.clone());
        }
    }

    /// Chains `records`, appends them to the trail, then to the sink.
    async fn append(&mut self, records: Vec<Record>) -> Result<(), AuditError> {
        let chained = append(&*self.log, &mut self.head, records).await?;
        match &self.sink {
            Some(sink) => sink.write_events(&chained),
            None => Ok(()),
        }
    }

    /// Seals the sink's file, if it has new events.
    fn seal(&self, upkeep: &Upkeep) {
        if let Some(sink) = &self.sink
            && let Err(error) = sink.seal(&*upkeep.signer, upkeep.clock.now())
        {
            tracing::warn!(%error, "the audit file's head was not sealed; will try again");
        }
    }

    /// Records the expiries that are due and applies retention, if this
    /// writer holds the lease.
    async fn upkeep(&mut self, upkeep: &Upkeep) -> Result<(), AuditError> {
        if !self.log.lease(&self.holder, upkeep.interval * 3).await? {
            return Ok(());
        }
        let now = upkeep.clock.now();
        loop {
            let due = self.log.due(now, EXPIRED_BATCH).await?;
            let more = due.len() == EXPIRED_BATCH;
            if !due.is_empty() {
                self.append(due.iter().map(|grant| grant.expired(now)).collect())
                    .await?;
            }
            if !more {
                break;
            }
        }
        self.trim(upkeep, now).await
    }

    /// Cuts what retention no longer keeps, behind a signed checkpoint.
    async fn trim(&mut self, upkeep: &Upkeep, now: SystemTime) -> Result<(), AuditError> {
        let cut = self.log.checkpoint().await?.map_or(0, |cut| cut.seq);
        let head = self.log.head().await?;
        let log = self.log.clone();
        let read = |seq: u64| {
            let log = log.clone();
            async move {
                Ok::<_, AuditLogError>(
                    log.read(seq - 1, 1)
                        .await?
                        .into_iter()
                        .find(|event| event.seq == seq),
                )
            }
        };
        let through = cut_point(&upkeep.retention, head.seq, cut, now, |seq| {
            let read = read(seq);
            async move { Ok(read.await?.map(|event| event.time)) }
        })
        .await?;
        let Some(through) = through else {
            return Ok(());
        };
        let Some(last) = read(through).await? else {
            return Ok(());
        };
        let token = upkeep
            .signer
            .sign_checkpoint(&last.head(), &last.time, now)
            .map_err(|message| {
                AuditError::Unavailable(format!("signing the checkpoint: {message}"))
            })?;
        self.log
            .trim(&SignedCheckpoint {
                seq: through,
                token,
            })
            .await?;
        tracing::info!(through, "audit trail trimmed behind a signed checkpoint");
        Ok(())
    }
}

async fn append(
    log: &dyn AuditLog,
    head: &mut Option<Head>,
    records: Vec<Record>,
) -> Result<Chained, AuditError> {
    let mut expected = match head.take() {
        Some(head) => head,
        None => log.head().await?,
    };
    let mut chained = Chained::seal(records, &expected);
    for _ in 0..MAX_ATTEMPTS {
        match log.append(&expected, &chained).await? {
            AppendOutcome::Appended(new) => {
                *head = Some(new);
                return Ok(chained);
            }
            // Another replica appended first: chain after it and retry.
            AppendOutcome::Moved(current) => {
                chained.rechain(&current);
                expected = current;
            }
        }
    }
    Err(AuditError::Unavailable(
        "the audit chain kept moving; gave up".to_owned(),
    ))
}
