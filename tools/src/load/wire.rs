//! The load generator's Kafka connection: size-prefixed frames over a glommio `TcpStream`,
//! request headers and bodies encoded with `kafka-protocol`, responses checked against the
//! correlation id they answer.
//!
//! A connection is used either in call-and-wait style ([`KafkaConn::call`], for the control
//! plane and consumers) or split into a writer and a reader ([`KafkaConn::split`]) so a producer
//! can keep several Produce requests in flight: Kafka answers requests of one connection in
//! order, so the reader matches responses to a FIFO of pending requests.

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use futures_lite::FutureExt;
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Largest response frame accepted, bytes.
pub const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Read buffer of each connection, bytes. Small on purpose: a run may hold thousands of
/// connections, and frames larger than the buffer are read around it.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// The client id sent with every request.
pub const CLIENT_ID: &str = "shardlog-load";

/// Errors talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The address did not resolve.
    #[error("cannot resolve broker address {addr}: {reason}")]
    Resolve {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to broker at {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing failed (the broker closed the connection, or a reset).
    #[error("connection to {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{what} to {addr} timed out after {ms} ms")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The address.
        addr: String,
        /// The limit.
        ms: u64,
    },
    /// A request could not be encoded.
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// Why.
        reason: String,
    },
    /// A response did not decode.
    #[error("cannot decode {api:?} v{version} response from {addr}: {reason}")]
    Decode {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A response frame was larger than [`FRAME_BYTES_MAX`] or negative.
    #[error("response frame of {0} bytes from the broker is out of bounds")]
    FrameSize(i64),
    /// A response answered another request.
    #[error("response correlation id {got} does not match request {expected}")]
    Correlation {
        /// The id awaited.
        expected: i32,
        /// The id received.
        got: i32,
    },
    /// The broker does not support a version of an API this client can speak.
    #[error("broker does not support {api:?} in versions {min}..={max} (it offers {offered})")]
    Unsupported {
        /// The API.
        api: ApiKey,
        /// Oldest version this client speaks.
        min: i16,
        /// Newest version this client speaks.
        max: i16,
        /// What the broker offered.
        offered: String,
    },
    /// A broker error code where the client cannot go on.
    #[error("{api:?} failed: {error}")]
    Broker {
        /// The API.
        api: ApiKey,
        /// The error.
        error: String,
    },
}

/// API versions negotiated with the broker (the highest both sides speak, within the client's
/// preferences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// Produce (3..=9).
    pub produce: i16,
    /// Fetch (4..=12; 13+ addresses topics by id).
    pub fetch: i16,
    /// Metadata (1..=12).
    pub metadata: i16,
    /// ListOffsets (1..=7), if offered.
    pub list_offsets: Option<i16>,
    /// CreateTopics (2..=7), if offered.
    pub create_topics: Option<i16>,
}

impl Versions {
    /// Picks versions from an ApiVersions response.
    pub fn negotiate(resp: &ApiVersionsResponse) -> Result<Self, WireError> {
        let find = |api: ApiKey| resp.api_keys.iter().find(|k| k.api_key == api as i16);
        let pick = |api: ApiKey, min: i16, max: i16| -> Result<Option<i16>, WireError> {
            match find(api) {
                None => Ok(None),
                Some(k) => {
                    let v = k.max_version.min(max);
                    if v < min || v < k.min_version {
                        Err(WireError::Unsupported {
                            api,
                            min,
                            max,
                            offered: format!("{}..={}", k.min_version, k.max_version),
                        })
                    } else {
                        Ok(Some(v))
                    }
                }
            }
        };
        let need = |api: ApiKey, min: i16, max: i16| -> Result<i16, WireError> {
            pick(api, min, max)?.ok_or(WireError::Unsupported {
                api,
                min,
                max,
                offered: "nothing".into(),
            })
        };
        Ok(Self {
            produce: need(ApiKey::Produce, 3, 9)?,
            fetch: need(ApiKey::Fetch, 4, 12)?,
            metadata: need(ApiKey::Metadata, 1, 12)?,
            list_offsets: pick(ApiKey::ListOffsets, 1, 7)?,
            create_topics: pick(ApiKey::CreateTopics, 2, 7)?,
        })
    }
}

/// Resolves `addr` to its first socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr, WireError> {
    addr.to_socket_addrs()
        .map_err(|e| WireError::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| WireError::Resolve {
            addr: addr.to_string(),
            reason: "no address".into(),
        })
}

/// Encodes one request frame (size, header, body) into `buf`.
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    correlation_id: i32,
    req: &R,
    version: i16,
) -> Result<(), WireError> {
    let api = ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions);
    let enc_err = |e: anyhow::Error| WireError::Encode {
        api,
        version,
        reason: e.to_string(),
    };
    let start = buf.len();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(buf, R::header_version(version))
        .map_err(enc_err)?;
    req.encode(buf, version).map_err(enc_err)?;
    let len = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes a response frame to request `R` at `version`, checking its correlation id.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    expected_correlation: i32,
    version: i16,
    addr: &str,
) -> Result<R::Response, WireError> {
    let api = ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions);
    let dec_err = |e: anyhow::Error| WireError::Decode {
        api,
        version,
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .map_err(dec_err)?;
    if header.correlation_id != expected_correlation {
        return Err(WireError::Correlation {
            expected: expected_correlation,
            got: header.correlation_id,
        });
    }
    R::Response::decode(&mut frame, version).map_err(dec_err)
}

/// Reads one size-prefixed frame.
pub async fn read_frame<S: futures_lite::AsyncRead + Unpin>(
    stream: &mut S,
    addr: &str,
) -> Result<Bytes, WireError> {
    let io = |source| WireError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(io)?;
    let len = i32::from_be_bytes(len);
    if len < 4 || len as usize > FRAME_BYTES_MAX {
        return Err(WireError::FrameSize(i64::from(len)));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await.map_err(io)?;
    Ok(Bytes::from(body))
}

/// Runs `fut` with a deadline.
pub async fn with_timeout<T>(
    what: &'static str,
    addr: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    let timeout = async {
        glommio::timer::sleep(limit).await;
        Err(WireError::Timeout {
            what,
            addr: addr.to_string(),
            ms: limit.as_millis() as u64,
        })
    };
    fut.or(timeout).await
}

/// One connection to one broker.
pub struct KafkaConn {
    stream: BufReader<TcpStream>,
    addr: String,
    next_correlation: i32,
    buf: BytesMut,
}

impl KafkaConn {
    /// Connects, failing after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, WireError> {
        let sock = resolve(addr)?;
        let stream = TcpStream::connect_timeout(sock, timeout)
            .await
            .map_err(|e| WireError::Connect {
                addr: addr.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        // Requests are whole frames written at once; Nagle would only add delay.
        stream.set_nodelay(true).map_err(|e| WireError::Io {
            addr: addr.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self {
            stream: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
            addr: addr.to_string(),
            next_correlation: 1,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at `version` and waits for its response.
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, WireError> {
        let corr = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.buf.clear();
        encode_request(&mut self.buf, corr, req, version)?;
        let io = |source| WireError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream
            .get_mut()
            .write_all(&self.buf)
            .await
            .map_err(io)?;
        let frame = read_frame(&mut self.stream, &self.addr).await?;
        decode_response::<R>(frame, corr, version, &self.addr)
    }

    /// ApiVersions: tries v3, falls back to v0 for brokers that refuse it.
    pub async fn api_versions(&mut self) -> Result<ApiVersionsResponse, WireError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        match self.call(&req, 3).await {
            Ok(r) if r.error_code == 0 => return Ok(r),
            Ok(_) | Err(WireError::Decode { .. }) => {}
            Err(e) => return Err(e),
        }
        let r = self.call(&ApiVersionsRequest::default(), 0).await?;
        if r.error_code != 0 {
            return Err(WireError::Broker {
                api: ApiKey::ApiVersions,
                error: error_name(r.error_code),
            });
        }
        Ok(r)
    }

    /// Splits into a writer and a reader that can be driven by two tasks.
    pub fn split(self) -> (FrameWriter, FrameReader) {
        let (r, w) = futures_lite::io::split(self.stream.into_inner());
        (
            FrameWriter {
                half: w,
                addr: self.addr.clone(),
                next_correlation: self.next_correlation,
                buf: self.buf,
            },
            FrameReader {
                half: BufReader::with_capacity(READ_BUFFER_BYTES, r),
                addr: self.addr,
            },
        )
    }
}

/// The writing half of a split connection.
pub struct FrameWriter {
    half: WriteHalf<TcpStream>,
    addr: String,
    next_correlation: i32,
    buf: BytesMut,
}

impl FrameWriter {
    /// Encodes and writes one request; returns its correlation id.
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, WireError> {
        let corr = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.buf.clear();
        encode_request(&mut self.buf, corr, req, version)?;
        self.half
            .write_all(&self.buf)
            .await
            .map_err(|source| WireError::Io {
                addr: self.addr.clone(),
                source,
            })?;
        Ok(corr)
    }

    /// The correlation id the next [`Self::send`] will use.
    pub fn next_correlation(&self) -> i32 {
        self.next_correlation
    }
}

/// The reading half of a split connection.
pub struct FrameReader {
    half: BufReader<ReadHalf<TcpStream>>,
    addr: String,
}

impl FrameReader {
    /// Reads the next response frame.
    pub async fn next_frame(&mut self) -> Result<Bytes, WireError> {
        read_frame(&mut self.half, &self.addr).await
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// A Kafka error code's name (`NotLeaderOrFollower`), or `code N` when unknown.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        None => "None".to_string(),
        Some(kafka_protocol::ResponseError::Unknown(c)) => format!("code {c}"),
        Some(e) => format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ResponseHeader};

    #[test]
    fn request_frame_has_size_and_header() {
        let mut buf = BytesMut::new();
        encode_request(&mut buf, 42, &MetadataRequest::default(), 9).expect("encodes");
        let len = i32::from_be_bytes(buf[..4].try_into().expect("4")) as usize;
        assert_eq!(len, buf.len() - 4);
        assert_eq!(
            i16::from_be_bytes([buf[4], buf[5]]),
            ApiKey::Metadata as i16
        );
        assert_eq!(i16::from_be_bytes([buf[6], buf[7]]), 9);
        assert_eq!(i32::from_be_bytes(buf[8..12].try_into().expect("4")), 42);
    }

    #[test]
    fn response_correlation_is_checked() {
        let mut b = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut b, MetadataResponse::header_version(9))
            .expect("header");
        MetadataResponse::default().encode(&mut b, 9).expect("body");
        let frame = b.freeze();
        assert!(decode_response::<MetadataRequest>(frame.clone(), 7, 9, "x").is_ok());
        assert!(matches!(
            decode_response::<MetadataRequest>(frame.clone(), 8, 9, "x"),
            Err(WireError::Correlation {
                expected: 8,
                got: 7
            })
        ));
        // Truncated responses are errors, not panics.
        for cut in 0..frame.len() {
            let _ = decode_response::<MetadataRequest>(frame.slice(..cut), 7, 9, "x");
        }
    }

    #[test]
    fn error_names() {
        assert_eq!(error_name(6), "NotLeaderOrFollower");
        assert_eq!(error_name(-1), "UnknownServerError");
        assert_eq!(error_name(0), "None");
    }
}
