//! The Kafka wire protocol as shardlog speaks it.
//!
//! Requests and most responses are decoded and encoded with the `kafka-protocol` crate, which
//! is generated from Kafka's own message schemas. The one exception is the Fetch response
//! ([`fetch_response`]): it is encoded around the record batches, so that the batches go to the
//! socket as the buffers they are, never copied into a response buffer.
//!
//! What shardlog implements is not listed here: the handlers' table
//! (`server::handlers::SUPPORTED_APIS`) is the one list, passed to [`decode_request_header`].

pub mod fetch_response;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a request could not be decoded or a response encoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The frame is too short or its fields do not parse.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The API key is not one shardlog implements.
    #[error("unsupported api key {0}")]
    UnsupportedApi(i16),
    /// The version is outside what shardlog advertises for that API.
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion {
        /// The API key.
        api_key: i16,
        /// The requested version.
        version: i16,
    },
    /// Encoding a response failed (a bug: the response did not fit its version).
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// One supported API: its key and the versions shardlog speaks. The table of them lives with
/// the handlers (`server::handlers::SUPPORTED_APIS`), the only list of what is implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiSpec {
    /// The API key.
    pub key: ApiKey,
    /// Lowest supported version.
    pub min_version: i16,
    /// Highest supported version.
    pub max_version: i16,
}

/// Decodes a request header from the front of a frame, leaving the body in `frame`.
///
/// API keys not in `apis` and versions outside their range are errors, except ApiVersions,
/// whose too-new versions must still be answered (with the v0 UNSUPPORTED_VERSION reply).
pub fn decode_request_header(
    frame: &mut Bytes,
    apis: &[ApiSpec],
) -> Result<RequestHeader, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::Malformed(
            "frame shorter than a request header".into(),
        ));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let ApiSpec {
        key,
        min_version: min,
        max_version: max,
    } = *apis
        .iter()
        .find(|a| a.key as i16 == api_key)
        .ok_or(ProtocolError::UnsupportedApi(api_key))?;
    if key == ApiKey::ApiVersions && version > max {
        // Too new to know its header: Kafka reads the client id the same way (header v1
        // prefix) and answers in v0 format. Parse just the fixed part.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id);
        let _ = frame.split_to(frame.len());
        return Ok(header);
    }
    if version < min || version > max {
        return Err(ProtocolError::UnsupportedVersion { api_key, version });
    }
    let header_version = key.request_header_version(version);
    RequestHeader::decode(frame, header_version)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// The client id of a request frame read without knowing its API (every request header from
/// v1 on starts with key, version, correlation id, then the client id as a nullable string),
/// for logging a request that cannot be decoded. `None` if the frame is too short or the id is
/// null or not UTF-8.
pub fn peek_client_id(frame: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes([*frame.get(8)?, *frame.get(9)?]);
    let bytes = frame.get(10..10 + usize::try_from(len).ok()?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// Decodes a request body of a known version.
pub fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, ProtocolError> {
    T::decode(body, version).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Starts a response frame: reserves the 4-byte size prefix and writes the response header.
/// [`finish_frame`] fills in the size once the body is written.
pub fn begin_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    capacity: usize,
) -> Result<BytesMut, ProtocolError> {
    let mut buf = BytesMut::with_capacity(capacity + 16);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    Ok(buf)
}

/// Writes the size prefix of a frame begun by [`begin_response`]; `extra` counts bytes sent
/// after `buf` as further buffers (the record batches of a Fetch response).
pub fn finish_frame(buf: &mut BytesMut, extra: usize) {
    let size = (buf.len() - 4 + extra) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
}

/// Encodes a whole response (size prefix, header, body) into one buffer.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, ProtocolError> {
    let size = body
        .compute_size(version)
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let mut buf = begin_response(api_key, version, correlation_id, size)?;
    body.encode(&mut buf, version)
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    finish_frame(&mut buf, 0);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataResponse};
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(key: ApiKey, version: i16) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("header");
        ApiVersionsRequest::default()
            .encode(&mut buf, version.min(4))
            .expect("body");
        buf.freeze()
    }

    const TEST_APIS: &[ApiSpec] = &[
        ApiSpec {
            key: ApiKey::ApiVersions,
            min_version: 0,
            max_version: 4,
        },
        ApiSpec {
            key: ApiKey::Fetch,
            min_version: 4,
            max_version: 16,
        },
    ];

    #[test]
    fn header_round_trip_and_limits() {
        let mut f = request_frame(ApiKey::ApiVersions, 3);
        let h = decode_request_header(&mut f, TEST_APIS).expect("v3 header");
        assert_eq!((h.request_api_version, h.correlation_id), (3, 77));
        let mut f = request_frame(ApiKey::ApiVersions, 9);
        let h =
            decode_request_header(&mut f, TEST_APIS).expect("too-new ApiVersions still answered");
        assert_eq!(h.correlation_id, 77);
        let mut f = Bytes::from_static(&[0, 1, 0, 99, 0, 0, 0, 1]);
        assert!(matches!(
            decode_request_header(&mut f, TEST_APIS),
            Err(ProtocolError::UnsupportedVersion { .. })
        ));
        let mut f = Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            decode_request_header(&mut f, TEST_APIS),
            Err(ProtocolError::UnsupportedApi(_))
        ));
        let mut f = Bytes::from_static(&[0, 1]);
        assert!(matches!(
            decode_request_header(&mut f, TEST_APIS),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn client_id_is_read_from_any_header() {
        let f = request_frame(ApiKey::ApiVersions, 9);
        assert_eq!(peek_client_id(&f).as_deref(), Some("t"));
        assert_eq!(peek_client_id(&[0, 1, 0, 2, 0, 0, 0, 1, 0]), None);
        assert_eq!(peek_client_id(&[0, 1, 0, 2, 0, 0, 0, 1, 0xff, 0xff]), None);
    }

    #[test]
    fn response_frame_size_prefix_counts_header_and_body() {
        let body = MetadataResponse::default();
        let frame = encode_response(ApiKey::Metadata, 12, 5, &body).expect("encode");
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(size, frame.len() - 4);
        assert_eq!(&frame[4..8], &5i32.to_be_bytes());
    }
}
