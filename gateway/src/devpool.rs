//! The local pool behind `tollgate dev`: tansu brokers sharing one SQLite file in the data dir.
//!
//! tansu brokers are stateless over their storage engine, so any number of them on one file
//! form a pool in which every broker serves every partition. The supervisor starts them on free
//! loopback ports, restarts one that dies (on the same port, so routing is unaffected), starts
//! and drains brokers when the autoscaler resizes the pool, and stops them all on shutdown.
//!
//! tansu reads the SQLite path relative to its working directory (an absolute `sqlite:///`
//! path is misread), so every broker runs in `<data dir>/pool` with `sqlite://tansu.db`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::pool::autoscale::Actuator;
use crate::pool::{Pool, DRAIN_TIMEOUT};
use crate::pool_admin::BoxFuture;

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

/// One broker of the local pool, and what stops it.
struct Member {
    addr: String,
    stop: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<()>,
}

/// The running pool. Dropping it kills the brokers; [`DevPool::shutdown`] stops them politely.
/// As an [`Actuator`], it starts brokers on the same store and drains and stops them, newest
/// first, so the autoscaler can resize the pool.
pub struct DevPool {
    tansu: String,
    dir: PathBuf,
    pool: Pool,
    members: tokio::sync::Mutex<Vec<Member>>,
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
        let devpool = DevPool {
            tansu: tansu.to_owned(),
            dir,
            pool: pool.clone(),
            members: tokio::sync::Mutex::new(Vec::new()),
        };
        for _ in 0..brokers.max(1) {
            devpool.add_one().await?;
        }
        Ok(devpool)
    }

    /// The brokers' addresses, oldest first.
    pub async fn addrs(&self) -> Vec<String> {
        self.members
            .lock()
            .await
            .iter()
            .map(|m| m.addr.clone())
            .collect()
    }

    /// Starts one more broker and adds it to the pool once it answers.
    async fn add_one(&self) -> Result<String, DevPoolError> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut child = spawn_broker(&self.tansu, &self.dir, port)?;
        self.pool.add_starting(&addr);
        if let Err(e) = await_ready(&self.pool, port, &mut child).await {
            self.pool.remove_broker(&addr);
            return Err(e);
        }
        let (stop, stopped) = watch::channel(false);
        let supervisor = tokio::spawn(supervise(
            self.tansu.clone(),
            self.dir.clone(),
            port,
            child,
            stopped,
        ));
        self.members.lock().await.push(Member {
            addr: addr.clone(),
            stop,
            supervisor,
        });
        Ok(addr)
    }

    /// Takes the newest broker out of the routing, lets its requests finish (at most
    /// [`DRAIN_TIMEOUT`]), and stops it.
    async fn remove_newest(&self) -> Option<String> {
        let member = self.members.lock().await.pop()?;
        self.pool.drain(&member.addr, DRAIN_TIMEOUT).await;
        let _ = member.stop.send(true);
        let _ = member.supervisor.await;
        tracing::info!(broker = %member.addr, "pool broker stopped");
        Some(member.addr)
    }

    /// Stops every broker and waits for them to exit.
    pub async fn shutdown(&self) {
        let members = std::mem::take(&mut *self.members.lock().await);
        for m in &members {
            let _ = m.stop.send(true);
        }
        for m in members {
            let _ = m.supervisor.await;
        }
    }
}

impl Actuator for DevPool {
    fn resize(&self, brokers: u32) -> BoxFuture<'_, Result<u32, String>> {
        Box::pin(async move {
            let want = usize::try_from(brokers.max(1)).unwrap_or(usize::MAX);
            loop {
                let have = self.members.lock().await.len();
                if have < want {
                    let addr = self.add_one().await.map_err(|e| e.to_string())?;
                    tracing::info!(broker = %addr, "pool broker started");
                } else if have > want {
                    self.remove_newest().await;
                } else {
                    return Ok(brokers.max(1));
                }
            }
        })
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

#[cfg(test)]
mod tests {
    //! Real tansu brokers on a SQLite file in a scratch dir (tansu from `TOLLGATE_TANSU` or
    //! `tansu` on PATH), as `tollgate dev` runs them.

    use super::*;
    use crate::pool::testing::{create_topic, produce};
    use crate::pool::Timeouts;

    #[tokio::test]
    async fn the_autoscaler_grows_the_local_pool_and_drains_it_back() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-devpool-{}-{}",
            std::process::id(),
            crate::pool::testing::free_port()
        ));
        let tansu = std::env::var("TOLLGATE_TANSU").unwrap_or_else(|_| "tansu".into());
        let pool = Pool::new(Timeouts::default());
        let devpool = DevPool::start(&tansu, &dir, 1, &pool).await.unwrap();
        let first = devpool.addrs().await[0].clone();
        create_topic(&pool.brokers()[0], "grown").await;

        assert_eq!(devpool.resize(3).await, Ok(3));
        let live: Vec<String> = pool.brokers().iter().map(|b| b.addr().to_owned()).collect();
        assert_eq!(live.len(), 3, "{live:?}");
        // The new brokers share the store: they serve the topic made through the first.
        for broker in pool.brokers() {
            assert_eq!(produce(&broker, "grown").await, 0, "{}", broker.addr());
        }

        let grown = devpool.addrs().await;
        assert_eq!(devpool.resize(1).await, Ok(1));
        assert_eq!(
            devpool.addrs().await,
            std::slice::from_ref(&first),
            "the newest leave first"
        );
        let live: Vec<String> = pool.brokers().iter().map(|b| b.addr().to_owned()).collect();
        assert_eq!(live, [first], "the drained ones left the routing");
        // A drained broker is stopped: its port refuses.
        let gone: Vec<&String> = grown.iter().filter(|a| !live.contains(a)).collect();
        assert_eq!(gone.len(), 2);
        for addr in gone {
            assert!(
                std::net::TcpStream::connect(addr).is_err(),
                "{addr} still listens"
            );
        }
        assert_eq!(devpool.resize(0).await, Ok(1), "never below one broker");
        devpool.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
