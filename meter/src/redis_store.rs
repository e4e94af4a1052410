//! The shared usage store for several gateway instances: Redis.
//!
//! A flush is applied by one Lua script, which Redis runs atomically: the (instance, seq)
//! check, every counter increment, every conditional clock move. A flush retried after a
//! timeout is therefore applied once, and instances' counts add up.
//!
//! Keys (cluster ids hyphenated, hours as Unix seconds):
//! - `tg:u:<cluster>:<hour>`: hash of the hour's counters (`cs`, `ps`, `bi`, `bo`, `ss`);
//! - `tg:p:<cluster>:<hour>`: hash of `<principal>\0in` / `<principal>\0out` byte counts;
//! - `tg:uh:<cluster>`: sorted set of the hours that have usage, for range reads;
//! - `tg:uc:<cluster>`: sorted set of the hours whose usage changed since the closer billed them;
//! - `tg:clock:<cluster>`: the accrual clock; `tg:seq:<instance>`: the highest seq applied;
//! - `tg:counts:<cluster>`: hash of the partitions (`p`) and stored bytes (`s`) the clock's last
//!   move accrued at, written with it.
//!
//! The clock is also written as field `ac` of the hour hash holding the last second it
//! accrued, in the same script as that usage. If the clock key alone is lost (evicted, deleted
//! by hand, a partial restore), the clock is read back from the latest hour hash that has `ac`,
//! so accrual resumes where it stopped instead of at the cluster's creation (which billed its
//! whole lifetime again). Should that hash be lost too, the seconds accrued again are those
//! whose usage was lost with it: a second is never counted twice.
//!
//! Counts cross into Lua as strings: Lua numbers are doubles, and storage byte-seconds pass
//! 2^53 long before they pass Redis's 64-bit integers. Keys of one flush span clusters, so the
//! store needs a single Redis (or a primary with replicas), not Redis Cluster.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

use crate::store::{Applied, BoxFuture, Counts, Flush, PrincipalUsage, StoreError, UsageStore};
use crate::HourlyUsage;

/// `clock_of(c)`: the cluster's accrual clock as a string, healed from the usage hashes when the
/// clock key is missing (see the module docs); `false` if the cluster never accrued.
const CLOCK_OF: &str = r#"
local function clock_of(c)
  local clock = redis.call('GET', 'tg:clock:' .. c)
  if clock then
    return clock
  end
  -- Newest hour first; hours holding only bytes have no `ac` and are passed over.
  local hours = redis.call('ZREVRANGE', 'tg:uh:' .. c, 0, -1)
  for _, h in ipairs(hours) do
    local ac = redis.call('HGET', 'tg:u:' .. c .. ':' .. h, 'ac')
    if ac then
      return ac
    end
  end
  return false
end
"#;

const CLOCKS: &str = r#"
local out = {}
for i, c in ipairs(ARGV) do
  out[i] = clock_of(c) or ''
end
return out
"#;

const APPLY: &str = r#"
local f = cjson.decode(ARGV[1])
local seq_key = 'tg:seq:' .. f.instance
local last = redis.call('GET', seq_key)
if last and tonumber(f.seq) <= tonumber(last) then
  return cjson.encode({fresh = false, stale = {}})
end
redis.call('SET', seq_key, f.seq)
local function add(r)
  local k = 'tg:u:' .. r.c .. ':' .. r.h
  redis.call('HINCRBY', k, 'cs', r.cs)
  redis.call('HINCRBY', k, 'ps', r.ps)
  redis.call('HINCRBY', k, 'bi', r.bi)
  redis.call('HINCRBY', k, 'bo', r.bo)
  redis.call('HINCRBY', k, 'ss', r.ss)
  redis.call('ZADD', 'tg:uh:' .. r.c, r.h, r.h)
  redis.call('ZADD', 'tg:uc:' .. r.c, r.h, r.h)
end
for _, r in ipairs(f.bytes) do add(r) end
local stale = {}
for _, a in ipairs(f.accruals) do
  local clock = clock_of(a.c)
  if clock and clock ~= a.from then
    table.insert(stale, a.c)
  else
    for _, r in ipairs(a.rows) do add(r) end
    redis.call('SET', 'tg:clock:' .. a.c, a.to)
    redis.call('HSET', 'tg:counts:' .. a.c, 'p', a.p, 's', a.s)
    local last = a.rows[#a.rows]
    if last then
      redis.call('HSET', 'tg:u:' .. a.c .. ':' .. last.h, 'ac', a.to)
    end
  end
end
for _, p in ipairs(f.principals) do
  local k = 'tg:p:' .. p.c .. ':' .. p.h
  redis.call('HINCRBY', k, p.p .. '\0in', p.bi)
  redis.call('HINCRBY', k, p.p .. '\0out', p.bo)
  redis.call('ZADD', 'tg:uh:' .. p.c, p.h, p.h)
end
return cjson.encode({fresh = true, stale = stale})
"#;

/// Takes hours off `tg:uc:` whose counters still equal the rows given (fields absent count 0).
const MARK_CLOSED: &str = r#"
local rows = cjson.decode(ARGV[1])
for _, r in ipairs(rows) do
  local v = redis.call('HMGET', 'tg:u:' .. r.c .. ':' .. r.h, 'cs', 'ps', 'bi', 'bo', 'ss')
  local want = {r.cs, r.ps, r.bi, r.bo, r.ss}
  local same = true
  for i = 1, 5 do
    if (v[i] or '0') ~= want[i] then
      same = false
    end
  end
  if same then
    redis.call('ZREM', 'tg:uc:' .. r.c, r.h)
  end
end
return 0
"#;

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn row_json(r: &HourlyUsage) -> serde_json::Value {
    json!({
        "c": r.cluster.as_hyphenated().to_string(),
        "h": r.hour.to_string(),
        "cs": r.cluster_seconds.to_string(),
        "ps": r.partition_seconds.to_string(),
        "bi": r.bytes_in.to_string(),
        "bo": r.bytes_out.to_string(),
        "ss": r.storage_byte_seconds.to_string(),
    })
}

fn flush_json(f: &Flush) -> String {
    json!({
        "instance": f.instance,
        "seq": f.seq.to_string(),
        "bytes": f.bytes.iter().map(row_json).collect::<Vec<_>>(),
        "accruals": f.accruals.iter().map(|a| json!({
            "c": a.cluster.as_hyphenated().to_string(),
            "from": a.from.to_string(),
            "to": a.to.to_string(),
            "p": a.counts.partitions.to_string(),
            "s": a.counts.stored_bytes.to_string(),
            "rows": a.rows.iter().map(row_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "principals": f.principals.iter().map(|p| json!({
            "c": p.cluster.as_hyphenated().to_string(),
            "h": p.hour.to_string(),
            "p": p.principal,
            "bi": p.bytes_in.to_string(),
            "bo": p.bytes_out.to_string(),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Usage in Redis. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    script: std::sync::Arc<Script>,
    clocks: std::sync::Arc<Script>,
    mark_closed: std::sync::Arc<Script>,
}

impl RedisStore {
    /// Connects lazily: the gateway starts, serves and counts while Redis is down, and flushes
    /// the backlog once it is reachable.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Backend(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(RedisStore {
            conn,
            script: std::sync::Arc::new(Script::new(&format!("{CLOCK_OF}{APPLY}"))),
            clocks: std::sync::Arc::new(Script::new(&format!("{CLOCK_OF}{CLOCKS}"))),
            mark_closed: std::sync::Arc::new(Script::new(MARK_CLOSED)),
        })
    }

    async fn hours(&self, cluster: Uuid, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("tg:uh:{}", cluster.as_hyphenated());
        // `to` is exclusive.
        conn.zrangebyscore(key, from, format!("({to}"))
            .await
            .map_err(unavailable)
    }
}

impl UsageStore for RedisStore {
    fn apply<'a>(&'a self, flush: &'a Flush) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let answer: String = self
                .script
                .arg(flush_json(flush))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let v: serde_json::Value =
                serde_json::from_str(&answer).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let stale = v["stale"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Applied {
                fresh: v["fresh"].as_bool().unwrap_or(false),
                stale_accruals: stale,
            })
        })
    }

    fn clocks<'a>(
        &'a self,
        clusters: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<i64>>, StoreError>> {
        Box::pin(async move {
            if clusters.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.conn.clone();
            let mut invocation = self.clocks.prepare_invoke();
            for c in clusters {
                invocation.arg(c.as_hyphenated().to_string());
            }
            let values: Vec<String> = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            values
                .into_iter()
                .map(|v| match v.as_str() {
                    "" => Ok(None),
                    v => v
                        .parse()
                        .map(Some)
                        .map_err(|_| StoreError::Corrupt(format!("an accrual clock reads {v:?}"))),
                })
                .collect()
        })
    }

    fn last_counts<'a>(
        &'a self,
        clusters: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<Counts>>, StoreError>> {
        Box::pin(async move {
            if clusters.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for c in clusters {
                pipe.cmd("HMGET")
                    .arg(format!("tg:counts:{}", c.as_hyphenated()))
                    .arg(&["p", "s"]);
            }
            let mut conn = self.conn.clone();
            let values: Vec<[Option<u64>; 2]> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            Ok(values
                .into_iter()
                .map(|v| match v {
                    [Some(partitions), Some(stored_bytes)] => Some(Counts {
                        partitions,
                        stored_bytes,
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn unclosed(&self, cluster: Uuid) -> BoxFuture<'_, Result<Vec<i64>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let key = format!("tg:uc:{}", cluster.as_hyphenated());
            conn.zrange(key, 0, -1).await.map_err(unavailable)
        })
    }

    fn mark_closed<'a>(&'a self, rows: &'a [HourlyUsage]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let rows: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
            let mut conn = self.conn.clone();
            let _: i64 = self
                .mark_closed
                .arg(serde_json::Value::Array(rows).to_string())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn hourly(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> BoxFuture<'_, Result<Vec<HourlyUsage>, StoreError>> {
        Box::pin(async move {
            let hours = self.hours(cluster, from, to).await?;
            if hours.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for h in &hours {
                pipe.cmd("HMGET")
                    .arg(format!("tg:u:{}:{h}", cluster.as_hyphenated()))
                    .arg(&["cs", "ps", "bi", "bo", "ss"]);
            }
            let mut conn = self.conn.clone();
            let values: Vec<[Option<u64>; 5]> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            Ok(hours
                .into_iter()
                .zip(values)
                .map(|(hour, v)| HourlyUsage {
                    cluster,
                    hour,
                    cluster_seconds: v[0].unwrap_or(0),
                    partition_seconds: v[1].unwrap_or(0),
                    bytes_in: v[2].unwrap_or(0),
                    bytes_out: v[3].unwrap_or(0),
                    storage_byte_seconds: v[4].unwrap_or(0),
                })
                .filter(|r| !r.is_zero())
                .collect())
        })
    }

    fn principals(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> BoxFuture<'_, Result<Vec<PrincipalUsage>, StoreError>> {
        Box::pin(async move {
            let hours = self.hours(cluster, from, to).await?;
            if hours.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for h in &hours {
                pipe.hgetall(format!("tg:p:{}:{h}", cluster.as_hyphenated()));
            }
            let mut conn = self.conn.clone();
            let maps: Vec<std::collections::HashMap<String, u64>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            let mut out = Vec::new();
            for (hour, map) in hours.into_iter().zip(maps) {
                let mut by_principal: std::collections::BTreeMap<String, (u64, u64)> =
                    Default::default();
                for (field, n) in map {
                    let Some((principal, dir)) = field.rsplit_once('\0') else {
                        continue;
                    };
                    let e = by_principal.entry(principal.to_owned()).or_default();
                    match dir {
                        "in" => e.0 += n,
                        "out" => e.1 += n,
                        _ => {}
                    }
                }
                out.extend(
                    by_principal
                        .into_iter()
                        .map(|(principal, (bytes_in, bytes_out))| PrincipalUsage {
                            cluster,
                            principal,
                            hour,
                            bytes_in,
                            bytes_out,
                        }),
                );
            }
            Ok(out)
        })
    }
}
