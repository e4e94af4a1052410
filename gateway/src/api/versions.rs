//! ApiVersions: what the gateway advertises.
//!
//! An API is advertised only if the gateway has tenancy handling for it, and then only in the
//! versions both the gateway handles and every pool broker supports. Anything else is refused
//! if a client sends it anyway: fail closed, so an API we never thought about can never carry a
//! physical name or another tenant's data across.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use crate::pool::{PoolKind, Router};

/// Where the API is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// By the gateway alone: the pool's versions do not matter.
    Locally,
    /// Forwarded to the pool: the pool's versions bound ours.
    Pool,
}

/// Every API the gateway handles, with the versions whose semantics the rewrite covers.
pub const HANDLED: &[(ApiKey, i16, i16, Served)] = &[
    (ApiKey::ApiVersions, 0, 4, Served::Locally),
    // v0 is offered because librdkafka only enables SASL when the range includes it; after a
    // v0 handshake the token travels as a raw frame (see `connection`).
    (ApiKey::SaslHandshake, 0, 1, Served::Locally),
    (ApiKey::SaslAuthenticate, 0, 2, Served::Locally),
    (ApiKey::DescribeCluster, 0, 1, Served::Locally),
    (ApiKey::Metadata, 0, 12, Served::Pool),
    (ApiKey::Produce, 3, 13, Served::Pool),
    (ApiKey::Fetch, 4, 18, Served::Pool),
    (ApiKey::ListOffsets, 1, 10, Served::Pool),
    (ApiKey::OffsetForLeaderEpoch, 2, 4, Served::Pool),
    (ApiKey::FindCoordinator, 0, 6, Served::Pool),
    (ApiKey::JoinGroup, 0, 9, Served::Pool),
    (ApiKey::SyncGroup, 0, 5, Served::Pool),
    (ApiKey::Heartbeat, 0, 4, Served::Pool),
    (ApiKey::LeaveGroup, 0, 5, Served::Pool),
    (ApiKey::OffsetCommit, 2, 9, Served::Pool),
    (ApiKey::OffsetFetch, 1, 9, Served::Pool),
    (ApiKey::DescribeGroups, 0, 6, Served::Pool),
    (ApiKey::ListGroups, 0, 5, Served::Pool),
    (ApiKey::DeleteGroups, 0, 2, Served::Pool),
    (ApiKey::OffsetDelete, 0, 0, Served::Pool),
    (ApiKey::CreateTopics, 2, 7, Served::Pool),
    (ApiKey::DeleteTopics, 1, 6, Served::Pool),
    (ApiKey::DeleteRecords, 0, 2, Served::Pool),
    (ApiKey::CreatePartitions, 0, 3, Served::Pool),
    (ApiKey::DescribeConfigs, 1, 4, Served::Pool),
    (ApiKey::IncrementalAlterConfigs, 0, 1, Served::Pool),
    (ApiKey::InitProducerId, 0, 5, Served::Pool),
    // v4+ is the broker-to-broker batched form.
    (ApiKey::AddPartitionsToTxn, 0, 3, Served::Pool),
    (ApiKey::AddOffsetsToTxn, 0, 4, Served::Pool),
    (ApiKey::EndTxn, 0, 5, Served::Pool),
    (ApiKey::TxnOffsetCommit, 0, 5, Served::Pool),
];

/// APIs a stateless pool (tansu on its SQLite engine) cannot serve safely, whatever it
/// advertises: tansu 0.6's SQLite engine panics on DeleteRecords and wedges the broker for
/// every tenant. Neither advertised nor accepted there.
const UNSAFE_ON_STATELESS: &[ApiKey] = &[ApiKey::DeleteRecords];

/// The versions of `api` the gateway advertises now, if any.
pub fn advertised(router: &Router, api: ApiKey) -> Option<(i16, i16)> {
    if router.kind() == PoolKind::Stateless && UNSAFE_ON_STATELESS.contains(&api) {
        return None;
    }
    let pool = router.pool();
    let &(_, min, max, served) = HANDLED.iter().find(|(k, ..)| *k == api)?;
    let (min, max) = match served {
        Served::Locally => (min, max),
        Served::Pool => {
            let (pmin, pmax) = pool.versions(api)?;
            (min.max(pmin), max.min(pmax))
        }
    };
    (min <= max).then_some((min, max))
}

pub fn is_supported(router: &Router, api: ApiKey, version: i16) -> bool {
    advertised(router, api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

pub fn api_versions(
    router: &Router,
    _req: &ApiVersionsRequest,
    version: i16,
) -> ApiVersionsResponse {
    let api_keys = HANDLED
        .iter()
        .filter_map(|(api, ..)| {
            advertised(router, *api).map(|(min, max)| {
                ApiVersion::default()
                    .with_api_key(*api as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
        })
        .collect();
    let error_code = if (0..=4).contains(&version) {
        0
    } else {
        ResponseError::UnsupportedVersion.code()
    };
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}
