//! Several gateway instances, one pool (`--redis-url`): every instance publishes its load each
//! interval, and one instance at a time, the decider, decides on the sum of them all.
//!
//! One Lua script per interval and instance does both atomically: it stores the instance's
//! load in the hash `tg:autoscale:load` (field: instance id), takes or renews the decider lease
//! `tg:autoscale:decider` (a key with the decider's id, expiring after three intervals: an
//! instance that stops or loses Redis hands over within that), and returns the holder and
//! every instance's load. Loads older than two intervals are left out of the sum (an instance
//! that stopped), and older than an hour removed.
//!
//! The policy is the pool's, not an instance's: `tg:autoscale:policy` holds it, seeded by the
//! first instance from its `--autoscale-policy` file and replaced by `PUT /v1/pool/policy`
//! through any instance; every instance adopts it at its next exchange. The decider's events
//! go to the list `tg:autoscale:events` (the last 10,000), so `GET /v1/pool/events` answers
//! the same through every instance.
//!
//! A new decider starts with an empty decision window, so it scales in only after watching a
//! whole scale-down window itself: a handover never shrinks the pool early.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::decide::Load;

const LOADS: &str = "tg:autoscale:load";
const DECIDER: &str = "tg:autoscale:decider";
/// The size the decider is resizing the pool to: the other instances bring their routing in
/// line (drain the leaving brokers, take in the new ones) before the pool is asked for fewer.
const TARGET: &str = "tg:autoscale:target";
const POLICY: &str = "tg:autoscale:policy";
const EVENTS: &str = "tg:autoscale:events";
/// A load this old (seconds) is an instance gone for good.
const FORGET_AFTER: u64 = 3_600;

/// KEYS: loads, decider, target, policy. ARGV: instance, entry, lease ms, forget-before time,
/// this instance's policy (the pool's if it has none yet).
const SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[4], ARGV[5], 'NX')
local holder = redis.call('GET', KEYS[2])
if not holder then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  holder = ARGV[1]
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local t = tonumber(string.match(all[i + 1], '^(%d+)'))
  if t and t < tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return {holder, out, redis.call('GET', KEYS[3]) or '', redis.call('GET', KEYS[4])}
";

/// What one exchange learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Whether this instance is the decider now.
    pub deciding: bool,
    /// The decider's instance id.
    pub decider: String,
    /// The pool's load: the sum over every instance that published within two intervals.
    pub load: Load,
    /// How many instances that is.
    pub instances: usize,
    /// The size the decider last resized the pool to, if any.
    pub target: Option<u32>,
    /// The pool's policy (JSON).
    pub policy: String,
}

/// This instance's side of the exchange.
pub struct Shared {
    conn: ConnectionManager,
    instance: String,
    script: redis::Script,
}

impl Shared {
    /// Connects lazily: an instance starts while Redis is down and joins once it is back.
    pub fn new(url: &str, instance: String) -> Result<Shared, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        Ok(Shared {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            instance,
            script: redis::Script::new(SCRIPT),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Publishes `local`, this instance's load sampled at `now` (Unix seconds), and learns the
    /// pool's load, who decides and the pool's policy. `interval` is the policy's, `policy`
    /// this instance's (JSON), which becomes the pool's if it has none.
    pub async fn exchange(
        &self,
        now: u64,
        local: &Load,
        interval: u32,
        policy: &str,
    ) -> Result<Exchange, String> {
        let interval = u64::from(interval.max(1));
        let entry = format!(
            "{now} {} {} {} {}",
            local.bytes_in_per_second,
            local.bytes_out_per_second,
            local.requests_per_second,
            local.connections
        );
        let mut conn = self.conn.clone();
        type Answer = (String, Vec<(String, String)>, String, String);
        let (decider, all, target, pool_policy): Answer = self
            .script
            .key(LOADS)
            .key(DECIDER)
            .key(TARGET)
            .key(POLICY)
            .arg(&self.instance)
            .arg(entry)
            .arg(interval * 3 * 1_000)
            .arg(now.saturating_sub(FORGET_AFTER))
            .arg(policy)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| format!("exchanging load through Redis: {e}"))?;
        let (load, instances) = combine(&all, now, interval * 2);
        Ok(Exchange {
            deciding: decider == self.instance,
            decider,
            load,
            instances,
            target: target.parse().ok(),
            policy: pool_policy,
        })
    }

    /// Replaces the pool's policy (JSON, checked by the caller) for every instance.
    pub async fn put_policy(&self, policy: &str) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(POLICY)
            .arg(policy)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("sharing the policy through Redis: {e}"))
    }

    /// Appends one of the decider's events (JSON), keeping the last `keep`.
    pub async fn push_event(&self, event: &str, keep: usize) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("RPUSH")
            .arg(EVENTS)
            .arg(event)
            .ignore()
            .cmd("LTRIM")
            .arg(EVENTS)
            .arg(-(keep as i64))
            .arg(-1)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("recording an event in Redis: {e}"))
    }

    /// Every event kept (JSON), oldest first.
    pub async fn events(&self) -> Result<Vec<String>, String> {
        let mut conn = self.conn.clone();
        redis::cmd("LRANGE")
            .arg(EVENTS)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("reading events from Redis: {e}"))
    }

    /// Tells the other instances the pool is being resized to `brokers`.
    pub async fn announce(&self, brokers: u32) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(TARGET)
            .arg(brokers)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("announcing the pool's size through Redis: {e}"))
    }
}

/// Sums the loads published at most `max_age` seconds before `now`; unreadable entries are
/// left out. Returns the sum and how many instances it covers.
pub fn combine(entries: &[(String, String)], now: u64, max_age: u64) -> (Load, usize) {
    let mut sum = Load::default();
    let mut n = 0;
    for (_, entry) in entries {
        let fields: Vec<u64> = entry
            .split(' ')
            .map_while(|f| f.parse::<u64>().ok())
            .collect();
        let [time, bytes_in, bytes_out, requests, connections] = fields[..] else {
            continue;
        };
        if time + max_age < now {
            continue;
        }
        sum.bytes_in_per_second = sum.bytes_in_per_second.saturating_add(bytes_in);
        sum.bytes_out_per_second = sum.bytes_out_per_second.saturating_add(bytes_out);
        sum.requests_per_second = sum.requests_per_second.saturating_add(requests);
        sum.connections = sum.connections.saturating_add(connections);
        n += 1;
    }
    (sum, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_loads_add_up_and_stale_or_garbled_ones_are_left_out() {
        let entries = [
            ("a".to_owned(), "100 10 20 30 4".to_owned()),
            ("b".to_owned(), "98 1 2 3 1".to_owned()),
            ("gone".to_owned(), "80 1000 1000 1000 1000".to_owned()),
            ("bad".to_owned(), "100 1 2".to_owned()),
            ("worse".to_owned(), "x".to_owned()),
        ];
        let (load, n) = combine(&entries, 100, 10);
        assert_eq!(n, 2);
        assert_eq!(
            load,
            Load {
                bytes_in_per_second: 11,
                bytes_out_per_second: 22,
                requests_per_second: 33,
                connections: 5
            }
        );
    }
}
