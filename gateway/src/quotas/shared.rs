//! Rate quotas held across every gateway instance sharing Redis (`--redis-url`; CONTRACT,
//! "Quotas and limits": "A quota holds across all gateway instances sharing Redis").
//!
//! Each cluster's byte and request quotas are a token bucket in Redis (the hash
//! `tg:quota:{cluster}:{ingress|egress|requests}`: its tokens, when they were counted, and
//! when each instance last took from it), filling at the quota with one second's quota of
//! burst, as the single-instance bucket allows. Every [`INTERVAL_MS`], an instance whose
//! clients used a quota takes a slice of it for each, all in one Lua script call: what it
//! used in the last interval and what it owes, at most the bucket's tokens over the instances
//! taking from it (at least one interval's quota over them), so instances at their limit
//! share the quota about evenly. The data path spends the slices with one atomic
//! ([`super::lease::Lease`]) and never waits on Redis. Redis's clock (`TIME`) times the
//! bucket, so the instances' clocks need not agree. A bucket not touched for a minute
//! expires, which is exact: a missing bucket is a full one.
//!
//! Redis unreachable: each instance holds each cluster to its share, the quota over the
//! instances last seen spending it, with its own clock ([`super::rate::Bucket`]), and says so
//! once per outage.
//!
//! Count quotas (`max_connections`, `connections_per_second`,
//! `partition_mutations_per_5_minutes`) hold across instances too: in the same interval each
//! instance writes, for each cluster it counts something of, its connections open, those
//! admitted in its last second and the partitions created or deleted in its last five minutes
//! (the hash `tg:limits:{cluster}`, a field per instance, dropped after [`ACTIVE_MS`] without
//! a write), and reads the others' sums, which [`super::limits::Counts`] adds to its own. So a
//! cluster holds to these quotas within what the instances admit in one interval; with Redis
//! unreachable each instance keeps the others' last known counts.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::lease::{Lease, Want, INTERVAL_MS};
use super::limits::{Counts, Others};
use super::meter::{Kind, Meters};

/// Whether this instance's quotas are leased from Redis now. Read by the data path. Before
/// the first exchange, each instance holds its share (all of the quota until it has seen
/// others), as when Redis is unreachable, but says nothing.
#[derive(Debug, Default)]
pub struct Link {
    state: AtomicU8,
}

const UP: u8 = 1;
const DOWN: u8 = 2;

impl Link {
    /// Whether charges are to spend leases (else the local bucket at the fallback share).
    pub fn up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Records an exchange's outcome; returns the previous state.
    fn set(&self, up: bool) -> u8 {
        self.state
            .swap(if up { UP } else { DOWN }, Ordering::Relaxed)
    }
}

/// KEYS: one bucket per quota leased. ARGV: the instance, then for each key its quota per
/// second and the amount wanted; then the burst (ms of quota), the interval (ms), how long an
/// instance counts as spending after its last slice (ms), and the bucket's expiry (ms).
/// Returns, for each key, the amount granted and the instances spending it (this one
/// included).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local burst = tonumber(ARGV[2 * n + 2])
local interval = tonumber(ARGV[2 * n + 3])
local active = tonumber(ARGV[2 * n + 4])
local expire = ARGV[2 * n + 5]
local me = 'i:' .. ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local quota = tonumber(ARGV[2 * i])
  local want = tonumber(ARGV[2 * i + 1])
  local full = quota * burst / 1000
  local tokens, at = full, now
  local peers = 1
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local f, v = h[j], h[j + 1]
    if f == 't' then
      tokens = tonumber(v)
    elseif f == 'at' then
      at = tonumber(v)
    elseif f ~= me and string.sub(f, 1, 2) == 'i:' then
      if tonumber(v) >= now - active then
        peers = peers + 1
      else
        redis.call('HDEL', key, f)
      end
    end
  end
  local elapsed = math.max(0, now - at)
  tokens = math.min(full, tokens + elapsed * quota / 1000)
  local cap = math.max(tokens, quota * interval / 1000) / peers
  local grant = math.floor(math.max(0, math.min(want, cap, tokens)))
  tokens = tokens - grant
  redis.call('HSET', key, 't', tostring(tokens), 'at', now, me, now)
  redis.call('PEXPIRE', key, expire)
  table.insert(out, grant)
  table.insert(out, peers)
end
return out
";

/// KEYS: one hash per cluster reported. ARGV: the instance, how long an instance's figures
/// count after it wrote them (ms), the hash's expiry (ms), then for each key the instance's
/// open connections, those admitted in its last second and its partition mutations in its
/// last window. Returns, for each key, the other instances' sums of the three.
const COUNTS_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = 'i:' .. ARGV[1]
local active = tonumber(ARGV[2])
local expire = ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  local k = 1 + 3 * i
  redis.call('HSET', key, me, ARGV[k] .. ':' .. ARGV[k + 1] .. ':' .. ARGV[k + 2] .. ':' .. now)
  local open, admitted, mutations = 0, 0, 0
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local f, v = h[j], h[j + 1]
    if f ~= me then
      local o, a, m, at = string.match(v, '^(%d+):(%d+):(%d+):(%d+)$')
      if o and tonumber(at) >= now - active then
        open = open + tonumber(o)
        admitted = admitted + tonumber(a)
        mutations = mutations + tonumber(m)
      else
        redis.call('HDEL', key, f)
      end
    end
  end
  redis.call('PEXPIRE', key, expire)
  table.insert(out, open)
  table.insert(out, admitted)
  table.insert(out, mutations)
end
return out
";

/// A bucket's allowance, in ms of its quota: one second, as [`super::rate::BURST_NS`].
const BURST_MS: u64 = 1_000;
/// An instance that took no slice for this long has stopped spending the quota: ten
/// intervals, so one slow exchange does not drop it.
const ACTIVE_MS: u64 = 10 * INTERVAL_MS;
/// A bucket not touched for this long is full again (after one second), so it may go.
const EXPIRE_MS: u64 = 60_000;

/// This instance's side of the shared quotas.
pub struct SharedQuotas {
    conn: ConnectionManager,
    instance: String,
    script: redis::Script,
    meters: Meters,
    link: Arc<Link>,
    counts_script: redis::Script,
    /// Where this instance's count quotas are counted, once attached.
    counts: Option<Arc<Counts>>,
}

impl SharedQuotas {
    /// Connects lazily: an instance starts while Redis is down and shares once it is back.
    /// From now on `meters` charge the leases while Redis answers.
    pub fn new(url: &str, instance: String, meters: Meters) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        // An exchange slower than this holds every cluster's leases back: fall back instead.
        let timeout = Duration::from_millis(10 * INTERVAL_MS);
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout));
        let link = meters.share();
        Ok(SharedQuotas {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            instance,
            script: redis::Script::new(SCRIPT),
            meters,
            link,
            counts_script: redis::Script::new(COUNTS_SCRIPT),
            counts: None,
        })
    }

    /// Shares the count quotas too, counted in `counts`.
    pub fn with_counts(mut self, counts: Arc<Counts>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// Tells the others this instance's counts of each cluster it counts something of, and
    /// learns theirs, once.
    pub async fn exchange_counts(&self) -> Result<(), redis::RedisError> {
        let Some(counts) = &self.counts else {
            return Ok(());
        };
        let report = counts.report(std::time::Instant::now());
        if report.is_empty() {
            return Ok(());
        }
        let mut invocation = self.counts_script.prepare_invoke();
        invocation.arg(&self.instance).arg(ACTIVE_MS).arg(EXPIRE_MS);
        for (cluster, mine) in &report {
            invocation
                .key(format!("tg:limits:{}", cluster.as_hyphenated()))
                .arg(mine.open)
                .arg(mine.admitted)
                .arg(mine.mutations);
        }
        let mut conn = self.conn.clone();
        let others: Vec<u64> = invocation.invoke_async(&mut conn).await?;
        for ((cluster, _), o) in report.iter().zip(others.chunks(3)) {
            let at = |i: usize| o.get(i).copied().unwrap_or(0);
            let others = Others {
                open: at(0),
                admitted: at(1),
                mutations: at(2),
            };
            counts.set_others(cluster, others);
        }
        Ok(())
    }

    /// Takes a slice of every quota this instance's clients are spending, once.
    pub async fn exchange(&self) -> Result<(), redis::RedisError> {
        let mut asks: Vec<(Arc<Lease>, Want)> = Vec::new();
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(&self.instance);
        for (cluster, meter) in self.meters.all() {
            for (kind, lease) in meter.leases() {
                if let Some(want) = lease.want() {
                    invocation
                        .key(format!(
                            "tg:quota:{}:{}",
                            cluster.as_hyphenated(),
                            name(kind)
                        ))
                        .arg(want.quota)
                        .arg(want.amount);
                    asks.push((lease.clone(), want));
                }
            }
        }
        if asks.is_empty() {
            return Ok(());
        }
        invocation
            .arg(BURST_MS)
            .arg(INTERVAL_MS)
            .arg(ACTIVE_MS)
            .arg(EXPIRE_MS);
        let mut conn = self.conn.clone();
        let granted: Vec<u64> = invocation.invoke_async(&mut conn).await?;
        for ((lease, _), g) in asks.iter().zip(granted.chunks(2)) {
            lease.grant(g[0], g.get(1).copied().unwrap_or(1));
        }
        Ok(())
    }

    /// Exchanges every interval until `stop`; says once per outage that quotas are held per
    /// instance, and when they are shared again.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_millis(INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let exchanged = match self.exchange().await {
                Ok(()) => self.exchange_counts().await,
                Err(e) => Err(e),
            };
            match exchanged {
                Ok(()) => {
                    if self.link.set(true) == DOWN {
                        tracing::info!(
                            "Redis answers again: rate quotas are shared by all instances"
                        );
                    }
                }
                Err(e) => {
                    if self.link.set(false) != DOWN {
                        tracing::warn!(
                            error = %e,
                            "Redis unreachable: each instance holds rate quotas to its share \
                             (the quota over the instances last seen) until it answers"
                        );
                    }
                }
            }
        }
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Ingress => "ingress",
        Kind::Egress => "egress",
        Kind::Requests => "requests",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::pool::testing::RedisServer;
    use crate::quotas::Quotas;

    const QUOTA: u64 = 100_000;

    fn quotas() -> Quotas {
        Quotas {
            ingress_bytes_per_second: Some(QUOTA),
            ..Quotas::default()
        }
    }

    /// Two instances' clients, each far over the cluster's quota, spend what the exchanges
    /// grant: together the quota, and about half each.
    #[tokio::test]
    async fn two_instances_share_one_quota() {
        let redis = RedisServer::start().await;
        let cluster = uuid::Uuid::new_v4();
        let instances: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let meters = Meters::default();
                let shared = SharedQuotas::new(&redis.url, name.into(), meters.clone()).unwrap();
                let meter = meters.cluster(&cluster, 1, |_| true);
                (shared, meter)
            })
            .collect();
        // A client sends 1,000 B whenever it is not throttled, checked every 10 ms; an
        // exchange every interval.
        let start = Instant::now();
        let span = Duration::from_secs(3);
        let mut sent = [0u64; 2];
        let mut muted = [start; 2];
        let mut next_exchange = start;
        while start.elapsed() < span {
            let now = Instant::now();
            if now >= next_exchange {
                for (shared, _) in &instances {
                    shared.exchange().await.unwrap();
                    shared.link.set(true);
                }
                next_exchange += Duration::from_millis(INTERVAL_MS);
            }
            for (i, (_, meter)) in instances.iter().enumerate() {
                while muted[i] <= Instant::now() {
                    sent[i] += 1_000;
                    let wait = meter.charge(Kind::Ingress, 1_000, &quotas());
                    muted[i] = Instant::now() + wait;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        // One second of burst, and what the data path admits ahead of its grants (within an
        // interval's share and one charge).
        let allowed = QUOTA as f64 * (secs + 1.0);
        let total = (sent[0] + sent[1]) as f64;
        eprintln!(
            "sent {sent:?} in {secs:.2} s: {:.3}x the quota (with its second of burst)",
            total / allowed
        );
        assert!(
            total <= allowed * 1.1 && total >= QUOTA as f64 * secs * 0.9,
            "sent {sent:?} in {secs:.2} s against {QUOTA} B/s"
        );
        for s in sent {
            assert!(s as f64 > total * 0.3, "uneven: {sent:?}");
        }
        for (_, meter) in &instances {
            assert_eq!(meter.leases()[0].1.peers(), 2);
        }
    }

    #[tokio::test]
    async fn redis_unreachable_falls_back_to_the_share_last_seen() {
        let redis = RedisServer::start().await;
        let url = redis.url.clone();
        let meters = Meters::default();
        let shared = SharedQuotas::new(&url, "a".into(), meters.clone()).unwrap();
        let meter = meters.cluster(&uuid::Uuid::new_v4(), 1, |_| true);
        meter.leases()[0].1.grant(0, 4);
        drop(redis);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Before any exchange the instance holds its share with its own bucket.
        assert!(!shared.link.up());
        assert_eq!(
            meter.charge(Kind::Ingress, QUOTA / 4, &quotas()),
            Duration::ZERO
        );
        let wait = meter.charge(Kind::Ingress, QUOTA / 4, &quotas());
        assert!(wait > Duration::from_millis(990), "{wait:?}");
        assert!(shared.exchange().await.is_err());
    }

    /// A cluster's connections and partition mutations across two instances hold to its
    /// max_connections, connections_per_second and partition_mutations_per_5_minutes once the
    /// instances have exchanged their counts.
    #[tokio::test]
    async fn count_quotas_hold_across_instances() {
        use crate::tenancy::Registry;
        let redis = RedisServer::start().await;
        let cluster = uuid::Uuid::new_v4();
        let quotas = Quotas {
            max_connections: Some(3),
            connections_per_second: Some(100),
            ..Quotas::default()
        };
        let instances: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let counts = Arc::new(Counts::new(Registry::default()));
                let shared = SharedQuotas::new(&redis.url, name.into(), Meters::default())
                    .unwrap()
                    .with_counts(counts.clone());
                (shared, counts)
            })
            .collect();
        let (a, b) = (&instances[0], &instances[1]);
        let now = std::time::Instant::now();
        let held: Vec<_> = (0..2)
            .map(|_| a.1.connect_at(cluster, &quotas, now).unwrap())
            .collect();
        // B hears of A's two (A writes first; B, with none of its own yet, is told on its
        // first connection and then asks).
        a.0.exchange_counts().await.unwrap();
        let third = b.1.connect_at(cluster, &quotas, now).unwrap();
        b.0.exchange_counts().await.unwrap();
        assert_eq!(b.1.connections_elsewhere(&cluster), 2);
        let refused = b.1.connect_at(cluster, &quotas, now).unwrap_err();
        assert!(refused.contains("3 connections open"), "{refused}");
        // A hears of B's one and refuses a fourth too.
        a.0.exchange_counts().await.unwrap();
        assert!(a.1.connect_at(cluster, &quotas, now).is_err());
        // A closes its two: once B hears so, B admits again.
        drop(held);
        a.0.exchange_counts().await.unwrap();
        b.0.exchange_counts().await.unwrap();
        assert_eq!(b.1.connections_elsewhere(&cluster), 0);
        let _more = b.1.connect_at(cluster, &quotas, now).unwrap();
        // Connection attempts add up across instances too: 2 + 1 + 1 admitted in this
        // second, at a quota of 4.
        let rate = Quotas {
            max_connections: None,
            connections_per_second: Some(4),
            ..Quotas::default()
        };
        b.0.exchange_counts().await.unwrap();
        a.0.exchange_counts().await.unwrap();
        let refused = a.1.connect_at(cluster, &rate, now).unwrap_err();
        assert!(refused.contains("connections_per_second"), "{refused}");
        drop(third);

        // Partition mutations add up too: 3 on A, then B may make 1 more of 4, not 2.
        a.1.mutate(&cluster, Some(4), 3, now).unwrap();
        a.0.exchange_counts().await.unwrap();
        b.0.exchange_counts().await.unwrap();
        let wait = b.1.mutate(&cluster, Some(4), 2, now).unwrap_err();
        assert!(
            wait > Duration::from_secs(290) && wait <= Duration::from_secs(300),
            "room within a window at the latest: {wait:?}"
        );
        b.1.mutate(&cluster, Some(4), 1, now).unwrap();
        b.0.exchange_counts().await.unwrap();
        a.0.exchange_counts().await.unwrap();
        assert!(a.1.mutate(&cluster, Some(4), 1, now).is_err());
    }
}
