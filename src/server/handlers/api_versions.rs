//! ApiVersions: the table of supported APIs, and the v0 reply to a version too new to know.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::{Request, SUPPORTED_APIS};
use crate::error_code::ErrorCode;
use crate::protocol::encode_response;
use crate::server::response::Reply;

/// Answers ApiVersions with every row of [`SUPPORTED_APIS`]. A version above the supported
/// maximum gets UNSUPPORTED_VERSION in the v0 format (which every client can read) with the full
/// table, so the client can retry with a version it shares with us. The request body is not
/// read: its fields (client software name and version) change nothing in the answer.
pub async fn handle(rq: &Request<'_>, _body: Bytes) -> Reply {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min_version)
                .with_max_version(a.max_version)
        })
        .collect();
    let max = SUPPORTED_APIS
        .iter()
        .find(|a| a.key == ApiKey::ApiVersions)
        .map_or(0, |a| a.max_version);
    let (version, error_code) = if rq.version > max {
        (0, ErrorCode::UNSUPPORTED_VERSION)
    } else {
        (rq.version, ErrorCode::NONE)
    };
    let body = ApiVersionsResponse::default()
        .with_error_code(error_code.code())
        .with_api_keys(api_keys);
    let frame = encode_response(ApiKey::ApiVersions, version, rq.correlation_id, &body)?;
    Ok(Some(vec![frame].into()))
}
