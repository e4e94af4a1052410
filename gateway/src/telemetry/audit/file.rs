//! The file sink (`--audit-log FILE|-`): JSON lines appended to a file, or written to stdout,
//! flushed after every batch.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::config::{AuditError, LogTarget};
use super::delivery::{Batch, Line, Sink, SinkName};

/// Lines written before one flush: whatever is queued, up to this many (a second's worth of a
/// storm of refused logins), so a burst costs a few writes rather than one per event.
const LOG_BATCH_EVENTS: usize = 1_000;

/// Written from a blocking task: file and terminal writes block, and the runtime's workers
/// must not.
pub(super) struct LogSink {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl LogSink {
    /// Opens the file now (creating it, mode 0640: the events name principals and addresses),
    /// so that a path that cannot be written stops the start with its reason.
    pub(super) fn open(target: &LogTarget) -> Result<LogSink, AuditError> {
        let out: Box<dyn Write + Send> = match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => {
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o640);
                }
                let file = options.open(path).map_err(|source| AuditError::Log {
                    path: path.clone(),
                    source,
                })?;
                Box::new(file)
            }
        };
        Ok(LogSink {
            out: Arc::new(Mutex::new(out)),
        })
    }
}

impl Sink for LogSink {
    const NAME: SinkName = SinkName::Log;

    fn fits(&self, batch: &Batch, _: &Line) -> bool {
        batch.lines.len() < LOG_BATCH_EVENTS
    }

    async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        // One buffer, one write: a line is never split by another writer of the same file.
        let mut all = Vec::with_capacity(batch.bytes);
        for line in &batch.lines {
            all.extend_from_slice(&line.bytes);
        }
        let out = self.out.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = out.lock().expect("poisoned");
            out.write_all(&all)?;
            out.flush()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::telemetry::audit::delivery::{run, SinkCounts};
    use crate::telemetry::audit::event::{Event, EventType, Record};

    #[tokio::test]
    async fn events_are_appended_as_json_lines() {
        let dir = std::env::temp_dir().join(format!("tollgate-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "{\"already\":\"there\"}\n").unwrap();
        let sink = LogSink::open(&LogTarget::File(path.clone())).unwrap();
        let (tx, rx) = mpsc::channel(10);
        let ids: Vec<_> = (0..3)
            .map(|n| {
                let r = Record::new(
                    Event::new(EventType::QuotaBreached, "max_connections"),
                    "s".into(),
                    n,
                );
                tx.try_send(Line::of(&r)).unwrap();
                r.id.to_string()
            })
            .collect();
        drop(tx);
        let counts = Arc::new(SinkCounts::default());
        let (_stop, stopping) = watch::channel(None);
        run(sink, rx, counts.clone(), stopping).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "appended after what was there");
        let got: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids);
        assert_eq!(counts.of(SinkName::Log), (3, 0));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir2 = dir.join("new.jsonl");
            LogSink::open(&LogTarget::File(dir2.clone())).unwrap();
            let mode = std::fs::metadata(&dir2).unwrap().permissions().mode();
            assert_eq!(mode & 0o007, 0, "nothing for others");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_path_that_cannot_be_written_says_so() {
        let e = LogSink::open(&LogTarget::File("/nonexistent-dir/audit.jsonl".into()))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("--audit-log /nonexistent-dir/audit.jsonl:"),
            "{e}"
        );
    }
}
