//! ApiVersions: the table of supported APIs, and the v0 reply to a version too new to know.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::protocol::StrBytes;

/// Kafka's feature name for the transaction protocol version.
const TRANSACTION_VERSION: &str = "transaction.version";
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
    // Features (v3+): `transaction.version`, which Kafka 4.x clients read to use transactions
    // v2 (KIP-890: Produce v12 adds the partition, EndTxn v5 bumps the epoch).
    let level = rq.shard.config.txn.transaction_version;
    let mut body = ApiVersionsResponse::default()
        .with_error_code(error_code.code())
        .with_api_keys(api_keys);
    if version >= 3 {
        body = body
            .with_supported_features(vec![SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
                .with_min_version(0)
                .with_max_version(2)])
            .with_finalized_features_epoch(1)
            .with_finalized_features(vec![FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
                .with_min_version_level(level)
                .with_max_version_level(level)]);
    }
    let frame = encode_response(ApiKey::ApiVersions, version, rq.correlation_id, &body)?;
    Ok(Some(vec![frame].into()))
}
