//! SaslHandshake and SaslAuthenticate on a listener without SASL: answered, not dropped.
//!
//! shardlog has no SASL listener yet. Kafka's brokers advertise both APIs on every listener
//! and answer them with ILLEGAL_SASL_STATE where SASL is not configured; doing the same lets a
//! client configured for SASL fail at once with an authentication error, where a closed
//! socket would look like a network fault and be retried forever (the Java client does).

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;

/// Answers SaslHandshake: ILLEGAL_SASL_STATE, no mechanism enabled.
pub async fn handshake(
    _rq: &Request<'_>,
    req: SaslHandshakeRequest,
) -> Result<SaslHandshakeResponse, ProtocolError> {
    tracing::debug!(mechanism = %req.mechanism, "SASL handshake on a listener without SASL");
    let resp = SaslHandshakeResponse::default()
        .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
        .with_mechanisms(Vec::new());
    Ok(resp)
}

/// Answers SaslAuthenticate: ILLEGAL_SASL_STATE.
pub async fn authenticate(
    _rq: &Request<'_>,
    _: SaslAuthenticateRequest,
) -> Result<SaslAuthenticateResponse, ProtocolError> {
    let resp = SaslAuthenticateResponse::default()
        .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
        .with_error_message(Some(sb("SASL is not enabled on this listener")));
    Ok(resp)
}
