//! The local pool behind `tollgate dev`: tansu brokers sharing one SQLite file in the data dir.
//!
//! tansu brokers are stateless over their storage engine, so any number of them on one file
//! form a pool in which every broker serves every partition. The supervisor starts them on free
//! loopback ports, restarts one that dies (on the same port, so routing is unaffected), and
//! stops them all on shutdown.
//!
//! tansu reads the SQLite path relative to its working directory (an absolute `sqlite:///`
//! path is misread), so every broker runs in `<data dir>/pool` with `sqlite://tansu.db`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::pool::Pool;

#[derive(Debug, thiserror::Error)]
pub enum DevPoolError {
    #[error("cannot start tansu at {path}: {source} (install it: cargo install tansu --version 0.6.0 --locked --features \"dynostore libsql postgres\")")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("no free port for a pool broker: {0}")]
    Port(std::io::Error),
    #[error("pool broker on port {port} did not become ready: {reason}")]
    NotReady { port: u16, reason: String },
    #[error("pool directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A free loopback port, found by binding port 0. Another process could take it before tansu
/// binds it; tansu then fails to start and readiness reports it.
fn free_port() -> Result<u16, DevPoolError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(DevPoolError::Port)?;
    Ok(l.local_addr().map_err(DevPoolError::Port)?.port())
}

fn spawn_broker(tansu: &str, dir: &Path, port: u16) -> Result<Child, DevPoolError> {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("broker-{port}.log")))
        .map_err(|source| DevPoolError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| DevPoolError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    Command::new(tansu)
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(["--cluster-id", "tollgate-dev"])
        // tansu also reads these from the environment; ours must not leak in.
        .env_remove("LISTENER_URL")
        .env_remove("ADVERTISED_LISTENER_URL")
        .env_remove("STORAGE_ENGINE")
        .env_remove("CLUSTER_ID")
        // tansu logs every request at info; the pool's log is for its warnings.
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DevPoolError::Spawn {
            path: tansu.to_owned(),
            source,
        })
}

/// Adds the broker to the pool once it answers ApiVersions.
async fn await_ready(pool: &Pool, port: u16, child: &mut Child) -> Result<(), DevPoolError> {
    let addr = format!("127.0.0.1:{port}");
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DevPoolError::NotReady {
                port,
                reason: format!("tansu exited with {status}; see its log in the pool directory"),
            });
        }
        match pool.add_broker(&addr).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(DevPoolError::NotReady { port, reason: last })
}

/// The running pool. Dropping it kills the brokers; [`DevPool::shutdown`] stops them politely.
pub struct DevPool {
    stop: watch::Sender<bool>,
    supervisors: Vec<tokio::task::JoinHandle<()>>,
    pub addrs: Vec<String>,
}

impl DevPool {
    pub async fn start(
        tansu: &str,
        data_dir: &Path,
        brokers: usize,
        pool: &Pool,
    ) -> Result<Self, DevPoolError> {
        let dir = data_dir.join("pool");
        std::fs::create_dir_all(&dir).map_err(|source| DevPoolError::Dir {
            path: dir.clone(),
            source,
        })?;
        let (stop, _) = watch::channel(false);
        let mut supervisors = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..brokers.max(1) {
            let port = free_port()?;
            let mut child = spawn_broker(tansu, &dir, port)?;
            await_ready(pool, port, &mut child).await?;
            addrs.push(format!("127.0.0.1:{port}"));
            supervisors.push(tokio::spawn(supervise(
                tansu.to_owned(),
                dir.clone(),
                port,
                child,
                stop.subscribe(),
            )));
        }
        Ok(DevPool {
            stop,
            supervisors,
            addrs,
        })
    }

    /// Stops every broker and waits for them to exit.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for s in self.supervisors {
            let _ = s.await;
        }
    }
}

async fn supervise(
    tansu: String,
    dir: PathBuf,
    port: u16,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(port, ?status, "pool broker exited; restarting it");
                tokio::time::sleep(Duration::from_millis(500)).await;
                match spawn_broker(&tansu, &dir, port) {
                    Ok(c) => child = c,
                    Err(e) => {
                        tracing::error!(port, error = %e, "cannot restart pool broker");
                        return;
                    }
                }
            }
            _ = stop.changed() => {
                terminate(&mut child).await;
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL if the broker has not exited within five seconds.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
