//! Transactions in a multi-node cluster (`process.roles` set): what changes when a
//! transaction's coordinator, its partitions and its group's coordinator may sit on different
//! brokers. Nothing here runs on one node (no `ClusterView`).
//!
//! - The coordinator of a transactional id is the leader of its `__transaction_state`
//!   partition. A shard replays a state partition when this broker becomes its leader and
//!   forgets its ids when the leadership moves ([`Shard::follow_txn_leadership`]), so the
//!   coordinator moves with the partition; until the replay is done the ids are answered
//!   COORDINATOR_LOAD_IN_PROGRESS, and on another broker NOT_COORDINATOR (the client looks
//!   the coordinator up again). The coordinator epoch of its markers is the partition's
//!   leader epoch, as in Kafka.
//! - Markers go to each partition's leader: through the mesh when it is this broker, else with
//!   WriteTxnMarkers v1 to the leader (Kafka's broker-to-broker request); a partition with no
//!   leader, or whose leader says NOT_LEADER_OR_FOLLOWER, is retried by the marker loop.
//! - KIP-890 verification and TV2's implicit add: a partition leader (Produce) or a group
//!   coordinator (TxnOffsetCommit v5) whose transaction's coordinator is elsewhere asks it
//!   with AddPartitionsToTxn v5 (the broker form, `verify_only` as the version asks).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{MarkerPart, Shard};
use crate::error_code::ErrorCode;
use crate::txn::{state_partition, TxnOp, TxnReply, TRANSACTION_STATE_TOPIC};

/// The tagged field (of a WriteTxnMarkers v1 marker) by which a shardlog coordinator tells a
/// shardlog partition leader that the marker ends a transactions-v2 transaction, so the
/// partition applies KIP-890's strict epoch check (Kafka carries this as WriteTxnMarkers v2's
/// `TransactionVersion`, which the protocol crate does not know yet). Other brokers ignore an
/// unknown tag; a marker without it is checked as v1's.
pub const MARKER_TRANSACTION_VERSION_TAG: i32 = 10_000;

/// The AddPartitionsToTxn version a broker uses to verify with a coordinator (the batched
/// broker form, KIP-890).
const VERIFY_VERSION: i16 = 5;

/// WriteTxnMarkers' only version.
const MARKERS_VERSION: i16 = 1;

/// Whether a marker received with WriteTxnMarkers ends a transactions-v2 transaction (see
/// [`MARKER_TRANSACTION_VERSION_TAG`]).
pub fn marker_is_v2(m: &WritableTxnMarker) -> bool {
    m.unknown_tagged_fields
        .get(&MARKER_TRANSACTION_VERSION_TAG)
        .is_some_and(|v| v.first().is_some_and(|&tv| tv >= 2))
}

/// Where a broker is reached, by the image: (host, port).
type Endpoint = (String, u16);

/// Markers with their index in the caller's list.
type IndexedMarkers = Vec<(usize, MarkerPart)>;

impl Shard {
    /// In a cluster: the broker coordinating a transactional id (the leader of its
    /// `__transaction_state` partition) and its endpoint; `None` while the partition has no
    /// live leader (or the topic does not exist yet). On one node: `None`.
    pub fn txn_coordinator_node(&self, transactional_id: &str) -> Option<(i32, Endpoint)> {
        let view = self.cluster_view()?;
        let p = state_partition(transactional_id, self.txn_state_partitions());
        let leader = view.partition(TRANSACTION_STATE_TOPIC, p)?.leader;
        view.endpoint(leader).map(|e| (leader, e))
    }

    /// In a cluster, whether this broker leads the `__transaction_state` partition of `id`
    /// (so this broker coordinates it); always true on one node.
    pub fn coordinates_txn(&self, transactional_id: &str) -> bool {
        let Some(view) = self.cluster_view() else {
            return true;
        };
        let p = state_partition(transactional_id, self.txn_state_partitions());
        view.leads(TRANSACTION_STATE_TOPIC, p)
    }

    /// The coordinator epoch markers of state partition `partition` carry: its leader epoch
    /// in a cluster (a coordinator that moved has a newer one), 0 on one node.
    pub(super) fn coordinator_epoch(&self, partition: i32) -> i32 {
        self.cluster_view()
            .and_then(|v| {
                v.partition(TRANSACTION_STATE_TOPIC, partition)
                    .map(|p| p.leader_epoch)
            })
            .unwrap_or(0)
            .max(0)
    }

    /// On the coordinator shard in a cluster: replays `partition` if this broker leads it and
    /// it is not loaded yet, then resumes the markers its decided transactions still owe.
    /// True once it is loaded (false while another request is loading it, or it failed).
    pub(super) async fn ensure_txn_loaded(self: &Rc<Self>, partition: i32) -> bool {
        if self.txns.is_loaded(partition) {
            return true;
        }
        if !self.txns.begin_load(partition) {
            return false;
        }
        self.txns.set_partitions(self.txn_state_partitions());
        match self.txns.replay(partition).await {
            Ok(n) => {
                self.txns.end_load(partition, true);
                tracing::info!(
                    shard = self.id,
                    partition,
                    records = n,
                    "coordinating the transactional ids of {TRANSACTION_STATE_TOPIC}-{partition}"
                );
                for job in self.txns.pending_jobs() {
                    if self.txns.partition_of(&job.transactional_id) == partition {
                        tracing::info!(transactional_id = %job.transactional_id, commit = job.commit, "resuming the markers of a decided transaction");
                        self.spawn_markers(job);
                    }
                }
                true
            }
            Err(e) => {
                self.txns.end_load(partition, false);
                tracing::warn!(partition, error = %e, "cannot replay {TRANSACTION_STATE_TOPIC}-{partition} yet");
                false
            }
        }
    }

    /// In a cluster, on every tick once serving: loads the owned `__transaction_state`
    /// partitions this broker leads and forgets the ones it no longer leads.
    pub(super) async fn follow_txn_leadership(self: &Rc<Self>) {
        let Some(view) = self.cluster_view() else {
            return;
        };
        if !self.txns.serving() {
            return;
        }
        let Some(count) = self
            .metadata()
            .topics
            .get(TRANSACTION_STATE_TOPIC)
            .map(|t| t.partitions)
        else {
            return;
        };
        self.txns.set_partitions(count);
        for p in 0..count {
            if self.owner_of(TRANSACTION_STATE_TOPIC, p) != self.id {
                continue;
            }
            if view.leads(TRANSACTION_STATE_TOPIC, p) {
                self.ensure_txn_loaded(p).await;
            } else if self.txns.is_loaded(p) {
                let n = self.txns.unload(p);
                tracing::info!(
                    partition = p,
                    ids = n,
                    "no longer the leader of {TRANSACTION_STATE_TOPIC}-{p}: its transactional ids are coordinated elsewhere"
                );
            }
        }
    }

    /// Adds partitions to (or with `verify_only`, checks them against) a transaction at its
    /// coordinator, wherever it is: this broker's coordinator shard, or in a cluster the
    /// coordinating broker with AddPartitionsToTxn v5. One code per partition, in order.
    pub async fn add_partitions_anywhere(
        self: &Rc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
    ) -> Vec<ErrorCode> {
        let n = partitions.len();
        if self.coordinates_txn(transactional_id) {
            // A broker-side add (a Produce of transactions v2, TxnOffsetCommit v5) may wait
            // for the producer's previous transaction to complete.
            let settle_wait_ms = if verify_only {
                0
            } else {
                self.config.txn.add_partitions_wait_max_ms
            };
            let op = TxnOp::AddPartitions {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch,
                partitions,
                verify_only,
                settle_wait_ms,
            };
            return match self.txn(transactional_id, op).await {
                Some(TxnReply::Partitions(c)) if c.len() == n => c,
                _ => vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n],
            };
        }
        let (Some(link), Some((node, (host, port)))) = (
            self.cluster.as_ref(),
            self.txn_coordinator_node(transactional_id),
        ) else {
            return vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n];
        };
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for (t, p) in &partitions {
            match topics.iter_mut().find(|x| x.name.as_str() == t) {
                Some(x) => x.partitions.push(*p),
                None => topics.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(vec![*p]),
                ),
            }
        }
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    transactional_id.to_string(),
                )))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_verify_only(verify_only)
                .with_topics(topics),
        ]);
        let resp = match link.call_broker(host, port, VERIFY_VERSION, req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(transactional_id, coordinator = node, error = %e, "cannot reach the transaction's coordinator");
                return vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n];
            }
        };
        if resp.error_code != 0 {
            return vec![ErrorCode::from_code(resp.error_code); n];
        }
        let found = |topic: &str, partition: i32| {
            resp.results_by_transaction
                .iter()
                .flat_map(|t| &t.topic_results)
                .filter(|t| t.name.as_str() == topic)
                .flat_map(|t| &t.results_by_partition)
                .find(|r| r.partition_index == partition)
                .map(|r| ErrorCode::from_code(r.partition_error_code))
        };
        partitions
            .iter()
            .map(|(t, p)| found(t, *p).unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE))
            .collect()
    }

    /// Writes markers at each partition's leader: this broker's own through the mesh, the
    /// others' with WriteTxnMarkers v1 to their leader (one request per broker, sent at
    /// once). Codes in part order; a partition without a live leader is
    /// NOT_LEADER_OR_FOLLOWER (retried by the caller).
    pub(super) async fn write_markers_anywhere(
        self: &Rc<Self>,
        parts: Vec<MarkerPart>,
    ) -> Vec<ErrorCode> {
        let (Some(view), Some(link)) = (self.cluster_view(), self.cluster.clone()) else {
            return self.write_markers(parts).await;
        };
        let n = parts.len();
        let mut out = vec![ErrorCode::NOT_LEADER_OR_FOLLOWER; n];
        let mut local: IndexedMarkers = Vec::new();
        let mut remote: Vec<(i32, Endpoint, IndexedMarkers)> = Vec::new();
        for (i, m) in parts.into_iter().enumerate() {
            let Some(state) = view.partition(&m.topic, m.partition) else {
                out[i] = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION;
                continue;
            };
            if state.leader == view.node_id {
                local.push((i, m));
                continue;
            }
            let Some(endpoint) = view.endpoint(state.leader) else {
                continue; // no live leader: retried
            };
            match remote.iter_mut().find(|r| r.0 == state.leader) {
                Some(r) => r.2.push((i, m)),
                None => remote.push((state.leader, endpoint, vec![(i, m)])),
            }
        }
        let mut calls = Vec::with_capacity(remote.len());
        for (node, (host, port), items) in remote {
            let link = link.clone();
            calls.push(glommio::spawn_local(async move {
                let req = markers_request(items.iter().map(|(_, m)| m));
                let answer = link.call_broker(host, port, MARKERS_VERSION, req).await;
                let codes: Vec<(usize, ErrorCode)> = match answer {
                    Ok(resp) => items
                        .iter()
                        .map(|(i, m)| {
                            let code = resp
                                .markers
                                .iter()
                                .filter(|r| r.producer_id.0 == m.producer_id)
                                .flat_map(|r| &r.topics)
                                .filter(|t| t.name.as_str() == m.topic)
                                .flat_map(|t| &t.partitions)
                                .find(|p| p.partition_index == m.partition)
                                .map_or(ErrorCode::NOT_LEADER_OR_FOLLOWER, |p| {
                                    ErrorCode::from_code(p.error_code)
                                });
                            (*i, code)
                        })
                        .collect(),
                    Err(e) => {
                        tracing::warn!(broker = node, error = %e, "transaction markers not delivered");
                        items
                            .iter()
                            .map(|(i, _)| (*i, ErrorCode::REQUEST_TIMED_OUT))
                            .collect()
                    }
                };
                codes
            }));
        }
        if !local.is_empty() {
            let (idx, parts): (Vec<usize>, Vec<MarkerPart>) = local.into_iter().unzip();
            for (i, code) in idx.into_iter().zip(self.write_markers(parts).await) {
                out[i] = code;
            }
        }
        for call in calls {
            for (i, code) in call.await {
                out[i] = code;
            }
        }
        out
    }
}

/// One WriteTxnMarkers request holding `parts` (one marker per producer, epoch, outcome and
/// coordinator epoch; its partitions grouped by topic).
fn markers_request<'a>(parts: impl Iterator<Item = &'a MarkerPart>) -> WriteTxnMarkersRequest {
    let mut markers: Vec<(MarkerKey, WritableTxnMarker)> = Vec::new();
    for m in parts {
        let key = (
            m.producer_id,
            m.producer_epoch,
            m.commit,
            m.coordinator_epoch,
            m.transaction_v2,
        );
        let at = match markers.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let mut w = WritableTxnMarker::default()
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_transaction_result(m.commit)
                    .with_coordinator_epoch(m.coordinator_epoch);
                if m.transaction_v2 {
                    w.unknown_tagged_fields
                        .insert(MARKER_TRANSACTION_VERSION_TAG, Bytes::from_static(&[2]));
                }
                markers.push((key, w));
                markers.len() - 1
            }
        };
        let topics = &mut markers[at].1.topics;
        match topics.iter_mut().find(|t| t.name.as_str() == m.topic) {
            Some(t) => t.partition_indexes.push(m.partition),
            None => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(m.topic.clone())))
                    .with_partition_indexes(vec![m.partition]),
            ),
        }
    }
    WriteTxnMarkersRequest::default().with_markers(markers.into_iter().map(|(_, w)| w).collect())
}

/// What one marker of a WriteTxnMarkers request is: (producer id, epoch, commit,
/// coordinator epoch, transactions v2).
type MarkerKey = (i64, i16, bool, i32, bool);

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn part(topic: &str, partition: i32, v2: bool) -> MarkerPart {
        MarkerPart {
            topic: topic.into(),
            partition,
            producer_id: 7,
            producer_epoch: 3,
            commit: true,
            coordinator_epoch: 2,
            transaction_v2: v2,
        }
    }

    /// Markers are grouped per producer outcome and topic, and the transactions-v2 tag
    /// survives the wire (a v1 marker carries none).
    #[test]
    fn markers_request_groups_and_tags() {
        let parts = [part("a", 0, true), part("a", 1, true), part("b", 0, true)];
        let req = markers_request(parts.iter());
        assert_eq!(req.markers.len(), 1);
        assert_eq!(req.markers[0].topics.len(), 2);
        assert_eq!(req.markers[0].topics[0].partition_indexes, vec![0, 1]);
        let mut buf = bytes::BytesMut::new();
        req.encode(&mut buf, MARKERS_VERSION).expect("encodes");
        let back =
            WriteTxnMarkersRequest::decode(&mut buf.freeze(), MARKERS_VERSION).expect("decodes");
        assert!(marker_is_v2(&back.markers[0]));
        assert_eq!(back.markers[0].coordinator_epoch, 2);
        let v1 = markers_request([part("a", 0, false)].iter());
        assert!(!marker_is_v2(&v1.markers[0]));
    }
}
