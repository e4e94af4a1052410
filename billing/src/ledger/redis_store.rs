//! The shared ledger store: Redis, for gateways that share state (`tollgate serve
//! --redis-url`).
//!
//! Each cluster has two keys, with the cluster id as hash tag so both live in the same slot of
//! a Redis Cluster:
//! - `<prefix>:{<cluster>}:entries`, a hash from `"<hour>:<dimension code>:<seq>"` to the
//!   entry's compact JSON value;
//! - `<prefix>:{<cluster>}:hours`, a sorted set of the same field names scored by hour, the
//!   index for range reads.
//!
//! Appends run as one Lua script, which Redis executes atomically: it checks that no key of the
//! batch exists, then writes them all, so a conflicting batch writes nothing. Reads are a
//! script too, so a read never sees half of a batch.

use redis::aio::ConnectionManager;
use redis::Script;
use uuid::Uuid;

use super::{check_batch, decode_entry, encode_value, LedgerEntry, LedgerStore, StoreFuture};
use crate::Error;

/// KEYS: entries hash, hours index. ARGV: (field, hour, value) triples.
/// Returns the first field that exists already, or nil once everything is written.
const APPEND: &str = r"
for i = 1, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    return ARGV[i]
  end
end
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
end
return false
";

/// KEYS: entries hash, hours index. ARGV: first hour, end hour (exclusive).
/// Returns field, value, field, value, ...
const READ: &str = r"
local fields = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '(' .. ARGV[2])
local out = {}
for _, field in ipairs(fields) do
  local value = redis.call('HGET', KEYS[1], field)
  if value then
    out[#out + 1] = field
    out[#out + 1] = value
  end
end
return out
";

/// Cheap to clone; clones share one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct RedisLedger {
    conn: ConnectionManager,
    prefix: String,
    append: Script,
    read: Script,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// The key prefix unless configured otherwise.
    pub const DEFAULT_PREFIX: &'static str = "tollgate:ledger";

    /// Connects to `url` (`redis://host:port/db`). `prefix` namespaces the keys, so one Redis
    /// can hold several deployments' (or tests') ledgers; usually
    /// [`RedisLedger::DEFAULT_PREFIX`]. The connection is made lazily and remade as needed, so
    /// a gateway starts and serves while Redis is down; ledger calls fail until it is back.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLedger, Error> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(5)))
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)));
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisLedger {
            conn,
            prefix: prefix.to_owned(),
            append: Script::new(APPEND),
            read: Script::new(READ),
        })
    }

    fn keys(&self, cluster: Uuid) -> (String, String) {
        (
            format!("{}:{{{cluster}}}:entries", self.prefix),
            format!("{}:{{{cluster}}}:hours", self.prefix),
        )
    }

    async fn append_async(&self, batch: Vec<LedgerEntry>) -> Result<(), Error> {
        let Some(cluster) = check_batch(&batch)? else {
            return Ok(());
        };
        let (entries_key, hours_key) = self.keys(cluster);
        let mut invocation = self.append.key(entries_key);
        invocation.key(hours_key);
        for entry in &batch {
            invocation
                .arg(field(entry))
                .arg(entry.hour)
                .arg(encode_value(entry)?);
        }
        let existing: Option<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        match existing {
            None => Ok(()),
            Some(existing) => Err(batch
                .iter()
                .find(|e| field(e) == existing)
                .map(LedgerEntry::conflict)
                .unwrap_or_else(|| Error::Corrupt {
                    key: existing,
                    reason: "the append script reported a key not in the batch".into(),
                })),
        }
    }

    async fn entries_async(
        &self,
        cluster: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<LedgerEntry>, Error> {
        if from_hour >= to_hour {
            return Ok(Vec::new());
        }
        let (entries_key, hours_key) = self.keys(cluster);
        let flat: Vec<Vec<u8>> = self
            .read
            .key(entries_key)
            .key(hours_key)
            .arg(from_hour)
            .arg(to_hour)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let (hour, dimension, seq) = parse_field(&pair[0]).ok_or_else(|| Error::Corrupt {
                key: String::from_utf8_lossy(&pair[0]).into_owned(),
                reason: "not an <hour>:<dimension>:<seq> field".into(),
            })?;
            out.push(decode_entry(cluster, hour, dimension, seq, &pair[1])?);
        }
        // The index orders equal hours by field name, where "10" sorts before "2".
        out.sort_by_key(LedgerEntry::key);
        Ok(out)
    }
}

fn field(entry: &LedgerEntry) -> String {
    format!("{}:{}:{}", entry.hour, entry.dimension.code(), entry.seq)
}

fn parse_field(field: &[u8]) -> Option<(i64, u8, u32)> {
    let mut parts = std::str::from_utf8(field).ok()?.split(':');
    let hour = parts.next()?.parse().ok()?;
    let dimension = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((hour, dimension, seq))
}

impl LedgerStore for RedisLedger {
    fn append(&self, batch: Vec<LedgerEntry>) -> StoreFuture<'_, ()> {
        Box::pin(self.append_async(batch))
    }

    fn entries(
        &self,
        cluster: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreFuture<'_, Vec<LedgerEntry>> {
        Box::pin(self.entries_async(cluster, from_hour, to_hour))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse() {
        assert_eq!(parse_field(b"-3600:2:10"), Some((-3600, 2, 10)));
        assert_eq!(parse_field(b"3600:2"), None);
        assert_eq!(parse_field(b"3600:2:1:1"), None);
        assert_eq!(parse_field(b"x:2:1"), None);
    }
}
