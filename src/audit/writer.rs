//! The [`Auditor`]: chains events and appends them to the central trail,
//! then to the JSON-lines sink if one is configured. One writer task per
//! process takes whatever requests have queued and appends them in one
//! round trip (group commit), so auditing adds one store round trip per
//! batch, not per event. A request is answered only once its events are
//! appended: if that fails, the request fails (fail closed), unless the
//! operator chose [`AuditMode::Degraded`].

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::log::{AppendOutcome, AuditLog};
use super::{AuditEvent, Head, Record};

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

/// One event a line, to a file (appended to) or stdout.
pub struct JsonLinesSink {
    out: Mutex<Box<dyn Write + Send>>,
    name: String,
}

/// Appends events to the trail; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    queue: mpsc::Sender<Batch>,
    mode: AuditMode,
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
        })
    }

    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self {
            out: Mutex::new(Box::new(std::io::stdout())),
            name: "stdout".to_owned(),
        }
    }

    /// A sink writing into `out` (tests, other destinations).
    pub fn writer(out: Box<dyn Write + Send>, name: &str) -> Self {
        Self {
            out: Mutex::new(out),
            name: name.to_owned(),
        }
    }

    fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let mut text = String::new();
        for event in events {
            text.push_str(&event.to_line());
            text.push('\n');
        }
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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

// === impl Auditor ===

impl Auditor {
    /// Starts the writer task (on the current tokio runtime).
    pub fn start(log: Arc<dyn AuditLog>, sink: Option<JsonLinesSink>, mode: AuditMode) -> Self {
        let (queue, batches) = mpsc::channel(4096);
        tokio::spawn(write_batches(log, sink, batches));
        Self { queue, mode }
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

async fn write_batches(
    log: Arc<dyn AuditLog>,
    sink: Option<JsonLinesSink>,
    mut batches: mpsc::Receiver<Batch>,
) {
    // The head this writer appended last; re-read after any failure.
    let mut head: Option<Head> = None;
    while let Some(first) = batches.recv().await {
        let mut taken = vec![first];
        while taken.len() < MAX_BATCH {
            match batches.try_recv() {
                Ok(batch) => taken.push(batch),
                Err(_) => break,
            }
        }
        let records: Vec<Record> = taken
            .iter()
            .flat_map(|batch| batch.records.iter().cloned())
            .collect();
        let result = match append(&*log, &mut head, records).await {
            Ok(events) => match &sink {
                Some(sink) => sink.write(&events),
                None => Ok(()),
            },
            Err(error) => Err(error),
        };
        for batch in taken {
            let _ = batch.done.send(result.clone());
        }
    }
}

async fn append(
    log: &dyn AuditLog,
    head: &mut Option<Head>,
    records: Vec<Record>,
) -> Result<Vec<AuditEvent>, AuditError> {
    let unavailable = |error: crate::store::StoreError| AuditError::Unavailable(error.to_string());
    let mut expected = match head.take() {
        Some(head) => head,
        None => log.head().await.map_err(unavailable)?,
    };
    for _ in 0..MAX_ATTEMPTS {
        let mut events = Vec::with_capacity(records.len());
        let mut last = expected.clone();
        for record in &records {
            let event = AuditEvent::seal(record.clone(), &last);
            last = event.head();
            events.push(event);
        }
        match log.append(&expected, &events).await.map_err(unavailable)? {
            AppendOutcome::Appended(new) => {
                *head = Some(new);
                return Ok(events);
            }
            // Another replica appended first: chain after it and retry.
            AppendOutcome::Moved(current) => expected = current,
        }
    }
    Err(AuditError::Unavailable(
        "the audit chain kept moving; gave up".to_owned(),
    ))
}
