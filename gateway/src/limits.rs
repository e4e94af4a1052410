//! What one client, source address or request may cost the gateway: the limits that keep one
//! tenant (or an unauthenticated peer) from hurting the others. Each default says why it has
//! that value; every one is a flag of `tollgate dev` and `tollgate serve`.

use std::time::Duration;

/// Limits on connections and requests, shared by every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time from accept to a successful SASL authentication. Real clients finish SASL within a
    /// few round trips (milliseconds); a peer that has not is holding a connection slot.
    pub sasl_deadline: Duration,
    /// An authenticated connection with no request for this long is closed: Kafka's
    /// `connections.max.idle.ms` default (10 minutes). Clients reconnect when they need to.
    pub idle_timeout: Duration,
    /// A client that takes no bytes of an answer for this long is closed: its answers would
    /// otherwise hold gateway memory and pool connections for as long as it likes. Kafka
    /// clients read continuously; 30 s is Kafka's default `request.timeout.ms`.
    pub write_stall: Duration,
    /// Open connections per source address: what MSK Serverless allows one cluster (3,000),
    /// under a third of the default `--max-connections`, so a single peer (a host, or a NAT in
    /// front of many) cannot take every slot.
    pub connections_per_source: usize,
    /// New connections per second per source address, as a token bucket with a burst of twice
    /// this. MSK Serverless allows 100 connection attempts per second per cluster.
    pub connection_attempts_per_source: u32,
    /// Longest a Fetch may long-poll at the pool (`max_wait_ms` above it is lowered). A fetch
    /// holds a pool connection of its own while it waits; clients default to 500 ms
    /// (librdkafka, the Java client, kafka-python), and a lower cap only makes them poll again.
    pub max_fetch_wait: Duration,
    /// Array elements (topics, partitions, groups, ids, configs, at any depth) one request may
    /// carry, checked while decoding, before any per-element work. A cluster has at most
    /// 2,400 partitions (MSK Serverless), and the largest requests real clients send name
    /// each partition once with its topic (Fetch, ListOffsets, OffsetCommit, OffsetFetch of a
    /// consumer on every partition): 2,400 partitions in up to 2,400 topics, plus room for a
    /// fetch session's forgotten topics. Produce's record batches are bytes, not elements.
    pub max_request_elements: usize,
    /// Largest frame of a request that carries no records (everything but Produce). Admin and
    /// group requests of real clients are kilobytes; the largest (a consumer's OffsetCommit
    /// of 2,400 partitions with metadata) stays well under this.
    pub max_control_frame_bytes: usize,
    /// Request bytes one connection may have in flight (read, not yet answered) before the
    /// gateway stops reading from it: two of the largest frames, so a producer pipelines.
    pub connection_bytes_in_flight: usize,
    /// Request bytes all of one cluster's connections may have in flight together: what a
    /// cluster's second of MSK Serverless ingress (200 MB/s) needs, and a bound on the gateway
    /// memory one tenant can take however many connections it opens.
    pub cluster_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sasl_deadline: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            write_stall: Duration::from_secs(30),
            connections_per_source: 3_000,
            connection_attempts_per_source: 100,
            max_fetch_wait: Duration::from_secs(5),
            max_request_elements: 10_000,
            max_control_frame_bytes: 1024 * 1024,
            connection_bytes_in_flight: 64 * 1024 * 1024,
            cluster_bytes_in_flight: 256 * 1024 * 1024,
        }
    }
}
