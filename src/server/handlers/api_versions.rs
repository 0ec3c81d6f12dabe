//! ApiVersions: the table of supported APIs, and the v0 reply to a version too new to know.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use crate::error_code::ErrorCode;
use crate::protocol::{encode_response, ProtocolError, SUPPORTED_APIS};

/// Answers ApiVersions. A version above the supported maximum gets UNSUPPORTED_VERSION in the
/// v0 format (which every client can read) with the full table, so the client can retry with
/// a version it shares with us.
pub fn handle(version: i16, correlation_id: i32) -> Result<Vec<Bytes>, ProtocolError> {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    let (_, _, max) = crate::protocol::supported_versions(ApiKey::ApiVersions as i16)
        .ok_or(ProtocolError::UnsupportedApi(ApiKey::ApiVersions as i16))?;
    let (version, error_code) = if version > max {
        (0, ErrorCode::UNSUPPORTED_VERSION.code())
    } else {
        (version, ErrorCode::NONE.code())
    };
    let body = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys);
    Ok(vec![encode_response(
        ApiKey::ApiVersions,
        version,
        correlation_id,
        &body,
    )?])
}
