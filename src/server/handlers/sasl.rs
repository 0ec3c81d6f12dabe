//! SaslHandshake and SaslAuthenticate on a listener without SASL: answered, not dropped.
//!
//! shardlog has no SASL listener yet. Kafka's brokers advertise both APIs on every listener
//! and answer them with ILLEGAL_SASL_STATE where SASL is not configured; doing the same lets a
//! client configured for SASL fail at once with an authentication error, where a closed
//! socket would look like a network fault and be retried forever (the Java client does).

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};

use super::sb;
use crate::error_code::ErrorCode;
use crate::protocol::{decode_body, encode_response, ProtocolError};

/// Answers SaslHandshake: ILLEGAL_SASL_STATE, no mechanism enabled.
pub fn handshake(
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Result<Vec<Bytes>, ProtocolError> {
    let req: SaslHandshakeRequest = decode_body(&mut body, version)?;
    tracing::debug!(mechanism = %req.mechanism, "SASL handshake on a listener without SASL");
    let resp = SaslHandshakeResponse::default()
        .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
        .with_mechanisms(Vec::new());
    Ok(vec![encode_response(
        ApiKey::SaslHandshake,
        version,
        correlation_id,
        &resp,
    )?])
}

/// Answers SaslAuthenticate: ILLEGAL_SASL_STATE.
pub fn authenticate(
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Result<Vec<Bytes>, ProtocolError> {
    let _: SaslAuthenticateRequest = decode_body(&mut body, version)?;
    let resp = SaslAuthenticateResponse::default()
        .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
        .with_error_message(Some(sb("SASL is not enabled on this listener")));
    Ok(vec![encode_response(
        ApiKey::SaslAuthenticate,
        version,
        correlation_id,
        &resp,
    )?])
}
