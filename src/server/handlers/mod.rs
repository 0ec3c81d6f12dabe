//! One handler per Kafka API: decode the request, call the shard layer, encode the response.

mod admin_topics;
mod api_versions;
mod configs;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod sasl;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use super::connection::Reply;
use crate::protocol::ProtocolError;
use crate::shard::Shard;

/// Routes one decoded request header and its body to the handler of its API, and records
/// its count and latency per API.
pub async fn dispatch(shard: &Rc<Shard>, header: RequestHeader, body: Bytes) -> Reply {
    let started = std::time::Instant::now();
    let key = header.request_api_key;
    let reply = dispatch_api(shard, header, body).await;
    shard
        .metrics
        .observe_request(key, started.elapsed(), reply.is_err());
    reply
}

async fn dispatch_api(shard: &Rc<Shard>, header: RequestHeader, body: Bytes) -> Reply {
    let key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| ProtocolError::UnsupportedApi(header.request_api_key))?;
    let v = header.request_api_version;
    let c = header.correlation_id;
    match key {
        ApiKey::ApiVersions => api_versions::handle(v, c).map(Some),
        ApiKey::Metadata => metadata::handle(shard, v, c, body).await.map(Some),
        ApiKey::Produce => produce::handle(shard, v, c, body).await,
        ApiKey::Fetch => fetch::handle(shard, v, c, body).await.map(Some),
        ApiKey::ListOffsets => list_offsets::handle(shard, v, c, body).await.map(Some),
        ApiKey::CreateTopics => admin_topics::create_topics(shard, v, c, body)
            .await
            .map(Some),
        ApiKey::DeleteTopics => admin_topics::delete_topics(shard, v, c, body)
            .await
            .map(Some),
        ApiKey::CreatePartitions => admin_topics::create_partitions(shard, v, c, body)
            .await
            .map(Some),
        ApiKey::DescribeConfigs => configs::describe(shard, v, c, body).map(Some),
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter(shard, v, c, body)
            .await
            .map(Some),
        ApiKey::DescribeCluster => metadata::describe_cluster(shard, v, c, body).map(Some),
        ApiKey::FindCoordinator => groups::find_coordinator(shard, v, c, body).map(Some),
        ApiKey::JoinGroup => {
            let client_id = header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            groups::join(shard, v, c, client_id, body).await.map(Some)
        }
        ApiKey::SyncGroup => groups::sync(shard, v, c, body).await.map(Some),
        ApiKey::Heartbeat => groups::heartbeat(shard, v, c, body).await.map(Some),
        ApiKey::LeaveGroup => groups::leave(shard, v, c, body).await.map(Some),
        ApiKey::ListGroups => groups::list(shard, v, c, body).await.map(Some),
        ApiKey::DescribeGroups => groups::describe(shard, v, c, body).await.map(Some),
        ApiKey::DeleteGroups => groups::delete(shard, v, c, body).await.map(Some),
        ApiKey::OffsetCommit => offsets::commit(shard, v, c, body).await.map(Some),
        ApiKey::OffsetFetch => offsets::fetch(shard, v, c, body).await.map(Some),
        ApiKey::OffsetDelete => offsets::delete(shard, v, c, body).await.map(Some),
        ApiKey::InitProducerId => init_producer_id::handle(shard, v, c, body).await.map(Some),
        ApiKey::SaslHandshake => sasl::handshake(v, c, body).map(Some),
        ApiKey::SaslAuthenticate => sasl::authenticate(v, c, body).map(Some),
        other => Err(ProtocolError::UnsupportedApi(other as i16)),
    }
}

/// A protocol string from a Rust string.
pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
