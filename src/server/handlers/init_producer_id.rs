//! InitProducerId v0–v5 for idempotent producers: a producer id unique across restarts (from
//! shard 0's persisted blocks) and epoch 0; a producer that names its id and epoch (KIP-360)
//! gets the epoch bumped. Transactional ids are refused: transactions are not implemented.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::error_code::ErrorCode;
use crate::protocol::{decode_body, encode_response, ProtocolError};
use crate::shard::Shard;

/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED: the closest Kafka code to "no transactions here".
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// Answers InitProducerId.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Result<Vec<Bytes>, ProtocolError> {
    let req: InitProducerIdRequest = decode_body(&mut body, version)?;
    let resp = if req.transactional_id.is_some() {
        InitProducerIdResponse::default()
            .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
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
    Ok(vec![encode_response(
        ApiKey::InitProducerId,
        version,
        correlation_id,
        &resp,
    )?])
}
