//! Broker-to-broker Kafka requests (Kafka's `NodeToNodeChannelManager` /
//! `InterBrokerSendThread` in spirit): a broker sends another broker an ordinary Kafka request
//! on its advertised listener and reads the answer, e.g. the transaction coordinator's
//! WriteTxnMarkers to a partition's leader, or a partition leader's AddPartitionsToTxn v4+
//! verification with a transaction's coordinator (KIP-890).
//!
//! Requests run on the control plane's tokio runtime (never on a shard's executor); the
//! caller awaits a channel. One idle connection per peer address is kept and re-used; a
//! connection that failed is dropped, and a request in flight on it fails (the caller retries
//! as its protocol says). Every request is bounded by [`INTER_BROKER_REQUEST_TIMEOUT_MS`].
//! Limit: the connection is PLAINTEXT, to the address the peer registered for clients; a
//! cluster whose client listener needs TLS or SASL cannot carry these requests yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request to another broker (connect, send, answer) gives up after this long.
pub const INTER_BROKER_REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Largest answer read from a peer broker; a larger length prefix closes the connection.
pub const INTER_BROKER_RESPONSE_BYTES_MAX: usize = 16 << 20;

/// The client id this broker's requests carry (as Kafka's `broker-<id>-...` clients).
fn client_id(node_id: i32) -> String {
    format!("shardlog-broker-{node_id}")
}

/// The idle connections to peer brokers, by address, and the next correlation id.
#[derive(Default)]
pub struct PeerConnections {
    idle: std::sync::Mutex<HashMap<String, TcpStream>>,
    correlation: AtomicI32,
}

/// Why a request to a peer broker got no answer.
#[derive(Debug, thiserror::Error)]
pub enum InterBrokerError {
    /// Connecting, sending or reading failed, or the peer closed the connection.
    #[error("broker at {addr}: {reason}")]
    Io {
        /// The peer's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// No answer within [`INTER_BROKER_REQUEST_TIMEOUT_MS`].
    #[error("broker at {0}: no answer within {INTER_BROKER_REQUEST_TIMEOUT_MS} ms")]
    TimedOut(String),
    /// The answer could not be decoded (or the request encoded).
    #[error("broker at {addr}: {reason}")]
    Protocol {
        /// The peer's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

impl PeerConnections {
    /// Sends `req` (version `version`) to the broker at `host:port` as node `node_id`, and
    /// returns its answer.
    pub async fn call<R: Request>(
        self: Arc<Self>,
        node_id: i32,
        host: &str,
        port: u16,
        version: i16,
        req: R,
    ) -> Result<R::Response, InterBrokerError> {
        let addr = format!("{host}:{port}");
        let protocol = |reason: String| InterBrokerError::Protocol {
            addr: addr.clone(),
            reason,
        };
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(client_id(node_id))));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(|e| protocol(format!("encoding the request header: {e}")))?;
        req.encode(&mut frame, version)
            .map_err(|e| protocol(format!("encoding the request: {e}")))?;
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = self.exchange(&addr, frame.freeze());
        let mut answer = match tokio::time::timeout(
            Duration::from_millis(INTER_BROKER_REQUEST_TIMEOUT_MS),
            exchange,
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(InterBrokerError::TimedOut(addr)),
        };
        let rh = ResponseHeader::decode(&mut answer, R::Response::header_version(version))
            .map_err(|e| protocol(format!("decoding the response header: {e}")))?;
        if rh.correlation_id != correlation_id {
            return Err(protocol(format!(
                "answer to correlation id {} for request {correlation_id}",
                rh.correlation_id
            )));
        }
        R::Response::decode(&mut answer, version)
            .map_err(|e| protocol(format!("decoding the response: {e}")))
    }

    /// Writes one frame on an idle connection to `addr` (or a new one) and reads one frame
    /// back; the connection goes back to the idle set only after a whole exchange.
    async fn exchange(&self, addr: &str, frame: Bytes) -> Result<Bytes, InterBrokerError> {
        let io = |reason: String| InterBrokerError::Io {
            addr: addr.to_string(),
            reason,
        };
        let idle = self.idle.lock().ok().and_then(|mut m| m.remove(addr));
        let mut stream = match idle {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| io(format!("connect: {e}")))?;
                let _ = s.set_nodelay(true);
                s
            }
        };
        stream
            .write_all(&frame)
            .await
            .map_err(|e| io(format!("send: {e}")))?;
        let len = stream
            .read_i32()
            .await
            .map_err(|e| io(format!("read: {e}")))?;
        if len < 0 || len as usize > INTER_BROKER_RESPONSE_BYTES_MAX {
            return Err(io(format!("answer of {len} bytes refused")));
        }
        let mut body = vec![0u8; len as usize];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| io(format!("read: {e}")))?;
        if let Ok(mut m) = self.idle.lock() {
            m.entry(addr.to_string()).or_insert(stream);
        }
        if body.is_empty() {
            return Err(io("empty answer".into()));
        }
        Ok(Bytes::from(body))
    }
}
