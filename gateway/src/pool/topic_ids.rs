//! Topic ids resolved to the pool's (physical) topic names.
//!
//! Topic ids are resolved to physical names through a cache filled from every metadata and
//! create-topics answer that passes through, so a tenant's request by id can be checked
//! against its namespace before it goes anywhere.

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use uuid::Uuid;

use super::error::UpstreamError;
use super::routing::Router;

impl Router {
    /// Records topic ids seen in a pool answer.
    pub fn learn_topic_ids<'a>(&self, pairs: impl IntoIterator<Item = (Uuid, &'a str)>) {
        let mut ids = self.topic_ids.write().expect("poisoned");
        for (id, name) in pairs {
            if !id.is_nil() {
                ids.insert(id, name.to_owned());
            }
        }
    }

    pub fn forget_topic_id(&self, id: &Uuid) {
        self.topic_ids.write().expect("poisoned").remove(id);
    }

    /// The physical name behind a topic id, asking the pool when the cache does not know it.
    pub async fn topic_name(&self, id: Uuid) -> Result<Option<String>, UpstreamError> {
        if id.is_nil() {
            return Ok(None);
        }
        if let Some(name) = self.topic_ids.read().expect("poisoned").get(&id) {
            return Ok(Some(name.clone()));
        }
        let (_, max) = self
            .pool
            .versions(ApiKey::Metadata)
            .ok_or_else(|| UpstreamError::Encode("pool does not support Metadata".into()))?;
        let version = max.min(12);
        // Every topic: a rare path (an id this gateway has not seen in any answer yet), and
        // not every pool can look topics up by id.
        let req = MetadataRequest::default().with_topics(None);
        let resp: MetadataResponse = self.call_any(version, &req).await?;
        self.learn_topic_ids(
            resp.topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| (t.topic_id, n.as_str()))),
        );
        Ok(self.topic_ids.read().expect("poisoned").get(&id).cloned())
    }
}
