//! SaslHandshake and SaslAuthenticate: the SASL exchange of a connection on a SASL listener
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; `security::sasl` runs the mechanisms).
//!
//! On a listener without SASL, Kafka's brokers still advertise both APIs and answer them with
//! ILLEGAL_SASL_STATE; doing the same lets a client configured for SASL fail at once with an
//! authentication error, where a closed socket would look like a network fault and be retried
//! forever (the Java client does). After a successful authentication a SaslHandshake starts a
//! re-authentication (KIP-368) when the listener has `connections.max.reauth.ms`; otherwise,
//! or within a second of the last one, both are answered with ILLEGAL_SASL_STATE and the
//! connection is kept, as in Kafka. A refused handshake or a
//! failed authentication is answered, logged once at INFO, and the connection is closed after
//! the answer (see `server/connection.rs`): nothing else is served on it.

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::sasl::Step;

/// Answers SaslHandshake: selects the mechanism, or refuses it (UNSUPPORTED_SASL_MECHANISM,
/// listing the enabled ones) and fails the connection.
pub async fn handshake(
    rq: &Request<'_>,
    req: SaslHandshakeRequest,
) -> Result<SaslHandshakeResponse, ProtocolError> {
    let mut sasl = rq.session.sasl.borrow_mut();
    let Some(auth) = sasl.as_mut() else {
        tracing::debug!(mechanism = %req.mechanism, "SASL handshake on a listener without SASL");
        return Ok(SaslHandshakeResponse::default()
            .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
            .with_mechanisms(Vec::new()));
    };
    let mechanisms = auth.mechanisms().iter().map(|m| sb(m)).collect();
    let resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    if auth.is_authenticated() && !auth.begin_reauthentication(std::time::Instant::now()) {
        return Ok(resp.with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code()));
    }
    if rq.version == 0 {
        // v0 is followed by raw SASL tokens outside Kafka's framing; every maintained client
        // uses v1 with SaslAuthenticate.
        let why = "SaslHandshake v0 (raw SASL tokens) is not supported; use v1".to_string();
        super::super::refusal::log_refusal(rq.client_id, "SaslHandshake", &why);
        rq.session.fail(why);
        return Ok(resp.with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code()));
    }
    match auth.handshake(req.mechanism.as_str()) {
        Ok(()) => Ok(resp),
        Err(e) => {
            super::super::refusal::log_refusal(rq.client_id, "SaslHandshake", &e.message);
            rq.session.fail(e.message);
            Ok(resp.with_error_code(e.code.code()))
        }
    }
}

/// Answers SaslAuthenticate: one token of the selected mechanism. A failure is
/// SASL_AUTHENTICATION_FAILED with the reason, and the connection is closed after it.
pub async fn authenticate(
    rq: &Request<'_>,
    req: SaslAuthenticateRequest,
) -> Result<SaslAuthenticateResponse, ProtocolError> {
    let mut sasl = rq.session.sasl.borrow_mut();
    let Some(auth) = sasl.as_mut() else {
        return Ok(SaslAuthenticateResponse::default()
            .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
            .with_error_message(Some(sb("SASL is not enabled on this listener"))));
    };
    if auth.is_authenticated() {
        return Ok(SaslAuthenticateResponse::default()
            .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
            .with_error_message(Some(sb(
                "already authenticated (re-authentication starts with SaslHandshake)",
            ))));
    }
    match auth.authenticate(&req.auth_bytes) {
        Ok(Step::Continue(token)) => {
            Ok(SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)))
        }
        Ok(Step::Done {
            principal,
            response,
        }) => {
            tracing::debug!(
                client_id = rq.client_id,
                listener = %rq.session.listener.name,
                principal = %principal,
                "SASL authentication succeeded"
            );
            let resp = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(response));
            // v1+: how long the session lasts before the client must re-authenticate.
            Ok(if rq.version >= 1 {
                resp.with_session_lifetime_ms(auth.session_lifetime_ms())
            } else {
                resp
            })
        }
        Err(e) => {
            super::super::refusal::log_refusal(rq.client_id, "SaslAuthenticate", &e.message);
            rq.session.fail(e.message.clone());
            Ok(SaslAuthenticateResponse::default()
                .with_error_code(e.code.code())
                .with_error_message(Some(sb(&e.message))))
        }
    }
}
