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

use super::connection::{Reply, Response};
use crate::protocol::ProtocolError;
use crate::shard::{ProduceTurn, Shard};

/// What a handler may know of the connection its request came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// Every earlier response of the connection has been written to the socket: a Fetch may
    /// then overdraw the fetch memory budget by its first batch (see `shard::fetch_memory`).
    pub drained: bool,
}

/// Routes one decoded request header and its body to the handler of its API, and records
/// its count and latency per API. A Produce appends in its connection's order (`turn`).
pub async fn dispatch(
    shard: &Rc<Shard>,
    conn: ConnInfo,
    header: RequestHeader,
    body: Bytes,
    turn: Option<ProduceTurn>,
) -> Reply {
    let started = std::time::Instant::now();
    let key = header.request_api_key;
    let reply = dispatch_api(shard, conn, header, body, turn).await;
    shard
        .metrics
        .observe_request(key, started.elapsed(), reply.is_err());
    reply
}

async fn dispatch_api(
    shard: &Rc<Shard>,
    conn: ConnInfo,
    header: RequestHeader,
    body: Bytes,
    turn: Option<ProduceTurn>,
) -> Reply {
    let key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| ProtocolError::UnsupportedApi(header.request_api_key))?;
    let v = header.request_api_version;
    let c = header.correlation_id;
    match key {
        ApiKey::ApiVersions => api_versions::handle(v, c).map(some),
        ApiKey::Metadata => metadata::handle(shard, v, c, body).await.map(some),
        ApiKey::Produce => {
            produce::handle(shard, v, c, body, turn.unwrap_or_else(ProduceTurn::first))
                .await
                .map(|r| r.map(Response::from))
        }
        ApiKey::Fetch => fetch::handle(shard, conn, v, c, body).await.map(Some),
        ApiKey::ListOffsets => list_offsets::handle(shard, v, c, body).await.map(some),
        ApiKey::CreateTopics => admin_topics::create_topics(shard, v, c, body)
            .await
            .map(some),
        ApiKey::DeleteTopics => admin_topics::delete_topics(shard, v, c, body)
            .await
            .map(some),
        ApiKey::CreatePartitions => admin_topics::create_partitions(shard, v, c, body)
            .await
            .map(some),
        ApiKey::DescribeConfigs => configs::describe(shard, v, c, body).map(some),
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter(shard, v, c, body)
            .await
            .map(some),
        ApiKey::DescribeCluster => metadata::describe_cluster(shard, v, c, body).map(some),
        ApiKey::FindCoordinator => groups::find_coordinator(shard, v, c, body).map(some),
        ApiKey::JoinGroup => {
            let client_id = header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            groups::join(shard, v, c, client_id, body).await.map(some)
        }
        ApiKey::SyncGroup => groups::sync(shard, v, c, body).await.map(some),
        ApiKey::Heartbeat => groups::heartbeat(shard, v, c, body).await.map(some),
        ApiKey::LeaveGroup => groups::leave(shard, v, c, body).await.map(some),
        ApiKey::ListGroups => groups::list(shard, v, c, body).await.map(some),
        ApiKey::DescribeGroups => groups::describe(shard, v, c, body).await.map(some),
        ApiKey::DeleteGroups => groups::delete(shard, v, c, body).await.map(some),
        ApiKey::OffsetCommit => offsets::commit(shard, v, c, body).await.map(some),
        ApiKey::OffsetFetch => offsets::fetch(shard, v, c, body).await.map(some),
        ApiKey::OffsetDelete => offsets::delete(shard, v, c, body).await.map(some),
        ApiKey::InitProducerId => init_producer_id::handle(shard, v, c, body).await.map(some),
        ApiKey::SaslHandshake => sasl::handshake(v, c, body).map(some),
        ApiKey::SaslAuthenticate => sasl::authenticate(v, c, body).map(some),
        other => Err(ProtocolError::UnsupportedApi(other as i16)),
    }
}

/// A response frame that holds nothing beyond its buffers.
fn some(parts: Vec<Bytes>) -> Option<Response> {
    Some(Response::from(parts))
}

/// A protocol string from a Rust string.
pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
