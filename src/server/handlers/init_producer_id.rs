//! InitProducerId v0–v5 for idempotent producers: a producer id unique across restarts (from
//! shard 0's persisted blocks) and epoch 0; a producer that names its id and epoch (KIP-360)
//! gets the epoch bumped. Transactional ids are refused: transactions are not implemented.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{refuse_transactions, Request};
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;

/// Answers InitProducerId.
pub async fn handle(
    rq: &Request<'_>,
    req: InitProducerIdRequest,
) -> Result<InitProducerIdResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let resp = if req.transactional_id.is_some() {
        refuse_transactions(rq, "InitProducerId");
        InitProducerIdResponse::default()
            .with_error_code(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else if version >= 3
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
