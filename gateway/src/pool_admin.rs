//! What the admin API needs from the broker pool, as a trait so the admin API can be tested
//! without one and the data path's upstream code stays the only thing that talks to brokers.

use std::future::Future;
use std::pin::Pin;

use crate::tenancy::Namespace;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Pool-side effects of cluster lifecycle changes.
///
/// Implementations must be idempotent: deleting the topics of a namespace that has none, or
/// whose topics are already gone, succeeds. An `Err` carries a message fit for the admin API's
/// 5xx answer; it must never name the pool's brokers or other tenants' resources.
pub trait PoolAdmin: Send + Sync + 'static {
    /// Deletes every topic on the pool whose name is in `namespace`, and returns how many.
    fn delete_namespace_topics(&self, namespace: Namespace)
        -> BoxFuture<'_, Result<usize, String>>;
}

/// The real thing: lists the pool's topics and deletes the namespace's, through the router.
pub struct RouterPoolAdmin {
    pub gateway: crate::state::Gateway,
}

impl PoolAdmin for RouterPoolAdmin {
    fn delete_namespace_topics(
        &self,
        namespace: Namespace,
    ) -> BoxFuture<'_, Result<usize, String>> {
        Box::pin(async move {
            use kafka_protocol::messages::{
                ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, MetadataRequest,
                MetadataResponse,
            };
            let router = self.gateway.router();
            let pool = router.pool();
            let unavailable = |e: crate::pool::UpstreamError| {
                tracing::warn!(error = %e, "pool cleanup failed");
                "the broker pool is unavailable; retry the request".to_string()
            };
            let (_, meta_max) = pool
                .versions(ApiKey::Metadata)
                .ok_or("the broker pool is unavailable; retry the request")?;
            let broker = router.any().map_err(unavailable)?;
            let meta: MetadataResponse = broker
                .call(
                    meta_max.min(12),
                    &MetadataRequest::default().with_topics(None),
                )
                .await
                .map_err(unavailable)?;
            let names: Vec<_> = meta
                .topics
                .into_iter()
                .filter_map(|t| t.name)
                .filter(|n| namespace.owns(&n.0))
                .collect();
            if names.is_empty() {
                return Ok(0);
            }
            let (_, del_max) = pool
                .versions(ApiKey::DeleteTopics)
                .ok_or("the broker pool cannot delete topics")?;
            // Name-based deletion is in every version up to 5; v6 names topics in `topics`.
            let version = del_max.min(5);
            let req = DeleteTopicsRequest::default()
                .with_topic_names(names.clone())
                .with_timeout_ms(30_000);
            let resp: DeleteTopicsResponse =
                broker.call(version, &req).await.map_err(unavailable)?;
            let unknown = kafka_protocol::ResponseError::UnknownTopicOrPartition.code();
            let failed: Vec<_> = resp
                .responses
                .iter()
                .filter(|r| r.error_code != 0 && r.error_code != unknown)
                .collect();
            if !failed.is_empty() {
                tracing::warn!(count = failed.len(), "pool refused to delete some topics");
                return Err("the broker pool refused to delete some of the cluster's topics; retry the request".into());
            }
            Ok(names.len())
        })
    }
}
