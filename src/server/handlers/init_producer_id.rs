//! InitProducerId v0–v5. For idempotent producers: a producer id unique across restarts (from
//! shard 0's persisted blocks) and epoch 0; a producer that names its id and epoch (KIP-360)
//! gets the epoch bumped. With a transactional id: the id's coordinator shard answers (a new
//! producer id, or the id's with its epoch bumped, fencing the previous producer; see
//! `crate::txn`).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::txn::fenced_for_version;
use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::txn::{TxnOp, TxnReply};

/// Answers InitProducerId.
pub async fn handle(
    rq: &Request<'_>,
    req: InitProducerIdRequest,
) -> Result<InitProducerIdResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let refused = |code: ErrorCode| {
        Ok(InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1))
    };
    if let Some(id) = req.transactional_id.as_deref().filter(|id| !id.is_empty()) {
        // Kafka: WRITE on the transactional id.
        if !rq.authorized(AclOperation::Write, ResourceType::TransactionalId, id) {
            return refused(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        }
        return Ok(transactional(rq, id, &req).await);
    }
    // Kafka (KIP-679): IDEMPOTENT_WRITE on the cluster, or WRITE on some topic.
    if !rq.authorized_quiet(
        AclOperation::IdempotentWrite,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) && !rq.authorized_any(AclOperation::Write, ResourceType::Topic)
    {
        return refused(ErrorCode::CLUSTER_AUTHORIZATION_FAILED);
    }
    let resp = if version >= 3
        && req.producer_id.0 >= 0
        && req.producer_epoch >= 0
        && req.producer_epoch < i16::MAX - 1
    {
        InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1)
    } else {
        match shard.allocate_producer_id().await {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot allocate a producer id");
                InitProducerIdResponse::default()
                    .with_error_code(ErrorCode::KAFKA_STORAGE_ERROR.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        }
    };
    Ok(resp)
}

/// InitProducerId for a transactional id, answered by its coordinator shard.
async fn transactional(
    rq: &Request<'_>,
    id: &str,
    req: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: ErrorCode| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    // As FindCoordinator: no transactions in a multi-node cluster yet (a client asking here
    // without a lookup gets the same fatal answer).
    if rq.shard.cluster.is_some() {
        super::super::refusal::log_refusal(
            rq.client_id,
            "InitProducerId",
            &super::groups::NO_TXN_IN_CLUSTER,
        );
        return failed(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    // A fresh id in case the transactional id is new (or its epoch is exhausted).
    let fresh = match rq.shard.allocate_producer_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot allocate a producer id");
            return failed(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
    };
    let (pid, epoch) = if rq.version >= 3 {
        (req.producer_id.0, req.producer_epoch)
    } else {
        (-1, -1)
    };
    let op = TxnOp::InitProducerId {
        transactional_id: id.to_string(),
        timeout_ms: req.transaction_timeout_ms,
        producer_id: pid,
        producer_epoch: epoch,
        fresh_producer_id: fresh,
    };
    match rq.shard.txn(id, op).await {
        Some(TxnReply::InitProducerId {
            error_code,
            producer_id,
            producer_epoch,
        }) => {
            if !error_code.is_none() && error_code != ErrorCode::CONCURRENT_TRANSACTIONS {
                tracing::info!(
                    client_id = rq.client_id,
                    transactional_id = id,
                    error_code = error_code.name(),
                    "InitProducerId refused"
                );
            }
            InitProducerIdResponse::default()
                .with_error_code(fenced_for_version(error_code, rq.version, 4).code())
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
        }
        _ => failed(ErrorCode::COORDINATOR_NOT_AVAILABLE),
    }
}
