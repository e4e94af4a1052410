//! The object store sink (`--audit-s3-url s3://bucket/prefix`, `--audit-s3-endpoint URL`):
//! events batched into gzip-compressed JSON-lines objects under an hourly partitioned prefix,
//! `prefix/year=YYYY/month=MM/day=DD/hour=HH/<first event's time>-<instance>-<seq>.json.gz`
//! (the layout Athena, Glue and Spark read as partitions), PUT path-style with SigV4.
//!
//! An object holds at most [`S3_MAX_EVENTS`] events or [`S3_MAX_BYTES`] of JSON, events of one
//! hour only, and is written [`S3_INTERVAL`] after its first event at the latest (at once on
//! shutdown). A PUT that fails is retried with the same key, so an object is never written
//! twice under two names.
//!
//! - [`sign`]: SigV4 for the PUT, shared with [`crate::identity::sigv4`].
//! - [`client`]: the HTTP(S) PUT.

pub mod client;
pub mod sign;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::config::{AuditError, S3Config};
use super::delivery::{Batch, Line, Sink, SinkName};

/// The longest an event waits for its object: S3 charges per PUT, and a minute keeps a quiet
/// gateway at 1,440 objects a day while an operator still finds an event within a minute.
pub const S3_INTERVAL: Duration = Duration::from_secs(60);
/// Events per object at most: a busy minute's worth, a few MiB of JSON before compression.
pub const S3_MAX_EVENTS: usize = 10_000;
/// JSON bytes per object at most (before compression), so one PUT stays small enough to send
/// in one attempt well within its timeout.
pub const S3_MAX_BYTES: usize = 16 * 1024 * 1024;

const CONTENT_TYPE: &str = "application/gzip";
const MS_PER_HOUR: i64 = 3_600_000;

pub(super) struct S3Sink {
    config: S3Config,
    credentials: sign::Credentials,
    client: client::Client,
    /// The instance as it may appear in a key.
    instance: String,
    /// Objects written by this process, for unique keys.
    written: u64,
    interval: Duration,
}

impl S3Sink {
    pub(super) fn new(
        config: S3Config,
        credentials: sign::Credentials,
        instance: &str,
    ) -> Result<S3Sink, AuditError> {
        Ok(S3Sink {
            client: client::Client::new(config.endpoint.clone())?,
            config,
            credentials,
            instance: key_safe(instance),
            written: 0,
            interval: S3_INTERVAL,
        })
    }

    #[cfg(test)]
    fn with_interval(mut self, interval: Duration) -> S3Sink {
        self.interval = interval;
        self
    }
}

/// Only `[A-Za-z0-9._-]`, anything else as `-`: an instance name from a host name may hold
/// anything.
fn key_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The key of the `seq`th object of `instance`, whose first event is at `first_ms`.
pub fn object_key(prefix: &str, first_ms: i64, instance: &str, seq: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(first_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut key = String::new();
    if !prefix.is_empty() {
        key.push_str(prefix);
        key.push('/');
    }
    key.push_str(&format!(
        "year={:04}/month={:02}/day={:02}/hour={:02}/{}-{instance}-{seq:06}.json.gz",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        sign::amz_date(first_ms),
    ));
    key
}

/// The batch's lines, gzip-compressed.
pub(super) fn gzip(batch: &Batch) -> Result<Vec<u8>, String> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(batch.bytes / 4),
        flate2::Compression::default(),
    );
    for line in &batch.lines {
        encoder.write_all(&line.bytes).map_err(|e| e.to_string())?;
    }
    encoder.finish().map_err(|e| e.to_string())
}

impl Sink for S3Sink {
    const NAME: SinkName = SinkName::S3;

    fn fits(&self, batch: &Batch, line: &Line) -> bool {
        let hour = |ms: i64| ms.div_euclid(MS_PER_HOUR);
        batch.lines.len() < S3_MAX_EVENTS
            && batch.bytes + line.bytes.len() <= S3_MAX_BYTES
            && batch
                .lines
                .first()
                .is_none_or(|first| hour(first.time_ms) == hour(line.time_ms))
    }

    fn due_at(&self, batch: &Batch) -> tokio::time::Instant {
        batch.started + self.interval
    }

    async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let Some(first) = batch.lines.first() else {
            return Ok(());
        };
        let key = object_key(
            &self.config.prefix,
            first.time_ms,
            &self.instance,
            self.written + 1,
        );
        let body = gzip(batch)?;
        let path = sign::object_path(&self.config.bucket, &key);
        let headers = sign::sign_put(
            &self.credentials,
            &self.config.region,
            &self.config.endpoint.authority(),
            &path,
            CONTENT_TYPE,
            &body,
            &sign::amz_date(super::event::now_ms()),
        );
        self.client
            .put(&path, &headers, Bytes::from(body))
            .await
            .map_err(|e| format!("PUT s3://{}/{key}: {e}", self.config.bucket))?;
        self.written += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::telemetry::audit::config::Endpoint;
    use crate::telemetry::audit::delivery::{run, SinkCounts};
    use crate::telemetry::audit::event::{Event, EventType, Record};

    #[test]
    fn keys_are_partitioned_by_the_hour_of_their_first_event() {
        let at = 1_714_564_800_123 + 3 * MS_PER_HOUR; // 2024-05-01T15:00:00.123Z
        assert_eq!(
            object_key("audit/tollgate", at, "gw-1", 7),
            "audit/tollgate/year=2024/month=05/day=01/hour=15/20240501T150000Z-gw-1-000007.json.gz"
        );
        assert_eq!(
            object_key("", 0, "x", 1),
            "year=1970/month=01/day=01/hour=00/19700101T000000Z-x-000001.json.gz"
        );
        assert_eq!(key_safe("pod/7 é"), "pod-7--");
    }

    fn line(time_ms: i64) -> Line {
        Line::of(&Record::new(
            Event::new(EventType::AuthenticationFailed, "SCRAM-SHA-512"),
            "s".into(),
            time_ms,
        ))
    }

    fn batch(times: &[i64]) -> Batch {
        let mut b = Batch {
            lines: Vec::new(),
            bytes: 0,
            started: tokio::time::Instant::now(),
        };
        for t in times {
            b.push(line(*t));
        }
        b
    }

    fn sink(endpoint: Endpoint) -> S3Sink {
        S3Sink::new(
            S3Config {
                bucket: "audit-bucket".into(),
                prefix: "events".into(),
                endpoint,
                region: "us-east-1".into(),
            },
            sign::Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
            "gw 1",
        )
        .unwrap()
    }

    #[test]
    fn an_object_holds_one_hour_and_at_most_its_limits() {
        let s = sink(Endpoint {
            tls: false,
            host: "127.0.0.1".into(),
            port: 9,
        });
        let b = batch(&[MS_PER_HOUR * 10]);
        assert!(s.fits(&b, &line(MS_PER_HOUR * 11 - 1)));
        assert!(
            !s.fits(&b, &line(MS_PER_HOUR * 11)),
            "the next hour is another object"
        );
        let mut full = batch(&[]);
        for _ in 0..S3_MAX_EVENTS {
            full.push(line(0));
        }
        assert!(!s.fits(&full, &line(0)));
        let mut large = batch(&[0]);
        large.bytes = S3_MAX_BYTES - 10;
        assert!(!s.fits(&large, &line(0)));
        assert_eq!(s.due_at(&b), b.started + S3_INTERVAL);
    }

    /// What a real HTTP server on loopback received: path, headers, body.
    type Received = Arc<Mutex<Vec<(String, hyper::HeaderMap, Vec<u8>)>>>;

    /// An HTTP server that takes PUTs, refusing the first `refuse` with S3's XML.
    async fn store(refuse: usize) -> (u16, Received) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Received = Default::default();
        let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(refuse));
        let got = received.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let got = got.clone();
                let refusals = refusals.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let got = got.clone();
                        let refusals = refusals.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await?.to_bytes().to_vec();
                            let refuse = refusals
                                .fetch_update(
                                    std::sync::atomic::Ordering::SeqCst,
                                    std::sync::atomic::Ordering::SeqCst,
                                    |n| n.checked_sub(1),
                                )
                                .is_ok();
                            let mut answer = Response::new(Full::new(bytes::Bytes::new()));
                            if refuse {
                                *answer.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                *answer.body_mut() = Full::new(bytes::Bytes::from_static(
                                    b"<Error><Code>SlowDown</Code></Error>",
                                ));
                            } else {
                                got.lock().unwrap().push((path, headers, body));
                            }
                            Ok::<_, hyper::Error>(answer)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (port, received)
    }

    fn gunzip(body: &[u8]) -> Vec<serde_json::Value> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn objects_are_written_after_the_interval_and_at_shutdown() {
        let (port, received) = store(1).await;
        let s = sink(Endpoint {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        })
        .with_interval(Duration::from_millis(300));
        let (tx, rx) = mpsc::channel(100);
        let counts = Arc::new(SinkCounts::default());
        let (stop, stopping) = watch::channel(None);
        let task = tokio::spawn(run(s, rx, counts.clone(), stopping));
        let now = crate::telemetry::audit::event::now_ms();
        for n in 0..3 {
            tx.send(line(now + n)).await.unwrap();
        }
        // Written once its interval passed (after one refusal, retried under the same key).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while received.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no object written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(counts.of(SinkName::S3), (3, 0));
        // A fourth waits for its own interval, but shutdown writes it at once.
        tx.send(line(now + 10)).await.unwrap();
        stop.send(Some(tokio::time::Instant::now() + Duration::from_secs(10)))
            .unwrap();
        drop(tx);
        task.await.unwrap();
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 2);
        let (path, headers, body) = &got[0];
        let first = gunzip(body);
        assert_eq!(first.len(), 3);
        let key = object_key("events", now, "gw-1", 1);
        assert_eq!(*path, sign::object_path("audit-bucket", &key));
        assert!(path.starts_with("/audit-bucket/events/year%3D"), "{path}");
        assert!(path.ends_with("-gw-1-000001.json.gz"), "{path}");
        assert_eq!(headers["content-type"], "application/gzip");
        assert_eq!(headers["host"], format!("127.0.0.1:{port}").as_str());
        let auth = headers["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
        assert!(!auth.contains("wJalr"), "the secret is never sent");
        let (path, _, body) = &got[1];
        assert!(path.ends_with("-gw-1-000002.json.gz"), "{path}");
        assert_eq!(gunzip(body).len(), 1);
        assert_eq!(counts.of(SinkName::S3), (4, 0));
    }
}
