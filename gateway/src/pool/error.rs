//! What can go wrong between the gateway and a pool broker, and whether sending the request
//! again is safe.

use std::time::Duration;

#[derive(Debug, thiserror::Error, Clone)]
pub enum UpstreamError {
    #[error("pool broker {addr} is unreachable: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to pool broker {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    #[error("pool broker {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("could not encode a request for the pool: {0}")]
    Encode(String),
    #[error("pool broker {addr} sent a response we could not decode: {reason}")]
    Decode { addr: String, reason: String },
    #[error("the pool has no live brokers")]
    NoBrokers,
}

impl UpstreamError {
    /// True only when the request certainly never reached a broker, so sending it again, to
    /// this broker or another, cannot make it happen twice. An `Io` error may come after the
    /// request was written, and a `Timeout` or `Decode` after the broker acted on it.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::NoBrokers | UpstreamError::Encode(_)
        )
    }
}

/// Whether a failure says the broker could not be reached or stopped answering (as opposed
/// to a message that could not be encoded or decoded).
pub fn is_network(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Connect { .. } | UpstreamError::Io { .. } | UpstreamError::Timeout { .. }
    )
}
