//! A real OTLP/HTTP receiver on loopback for the exporter's tests: records every request it
//! gets and answers as the test says.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

/// How long a test waits for an export it expects.
const EXPECT_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: Option<String>,
    pub body: Bytes,
}

pub struct Receiver {
    pub addr: SocketAddr,
    received: Mutex<mpsc::UnboundedReceiver<Received>>,
    /// Requests seen but not yet asked for by path.
    waiting: Mutex<Vec<Received>>,
    task: tokio::task::JoinHandle<()>,
}

pub fn ok() -> Response<Full<Bytes>> {
    // An empty Export*ServiceResponse encodes as no bytes.
    Response::new(Full::new(Bytes::new()))
}

/// 503 with `Retry-After: 0`, so that the retry follows without a backoff's wait.
pub fn unavailable() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("retry-after", "0")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

impl Receiver {
    /// Listens on a free loopback port; `answer(path, n)` answers the `n`th request (from 0)
    /// to `path`.
    pub async fn start(
        answer: impl Fn(&str, usize) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let answer = Arc::new(answer);
        let counts: Arc<std::sync::Mutex<HashMap<String, usize>>> = Default::default();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, answer, counts) = (tx.clone(), answer.clone(), counts.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (tx, answer, counts) = (tx.clone(), answer.clone(), counts.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let n = {
                                let mut counts = counts.lock().unwrap();
                                let seen = counts.entry(path.clone()).or_default();
                                *seen += 1;
                                *seen - 1
                            };
                            let _ = tx.send(Received {
                                path: path.clone(),
                                content_type,
                                body,
                            });
                            Ok::<_, Infallible>(answer(&path, n))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            received: Mutex::new(rx),
            waiting: Mutex::new(Vec::new()),
            task,
        }
    }

    /// The next request to `path`, in the order they came.
    pub async fn next(&self, path: &str) -> Received {
        let mut waiting = self.waiting.lock().await;
        if let Some(i) = waiting.iter().position(|r| r.path == path) {
            return waiting.remove(i);
        }
        let mut received = self.received.lock().await;
        let wait = async {
            loop {
                let r = received.recv().await.expect("receiver task ended");
                if r.path == path {
                    return r;
                }
                waiting.push(r);
            }
        };
        tokio::time::timeout(EXPECT_WITHIN, wait)
            .await
            .unwrap_or_else(|_| panic!("no request to {path} within {EXPECT_WITHIN:?}"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
