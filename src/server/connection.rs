//! One client connection: a reader that splits the byte stream into request frames and starts
//! a handler task per request, and a writer that sends the responses in request order.
//!
//! Frames are cut out of one growing read buffer as `Bytes` slices, so the record batches of a
//! Produce request stay slices of the bytes read from the socket until the storage engine's
//! single copy. A length prefix above `socket.request.max.bytes`, a garbage header or an
//! unsupported API closes this connection (with a log line) and nothing else.
//!
//! Backpressure (Kafka mutes a connection while a response is in flight): the reader stops
//! reading requests while
//! - `connection.inflight.requests.max` requests are waiting for their responses to be sent;
//! - the responses finished but not yet written hold more than
//!   `connection.response.buffer.bytes` (one larger response still goes out);
//! - the request is a Fetch and an earlier Fetch of this connection is still being served, so
//!   one connection holds at most one Fetch read in progress (the fetch memory budget's
//!   overdraft is bounded by the connections, not by what they pipeline).
//!
//! None of these waits depends on a later request of the same connection (responses go out in
//! request order and an earlier response never waits for a later one), so they cannot
//! deadlock; a client that stops reading just stops being read. Muted for
//! `connections.max.idle.ms` without its responses draining, the connection is closed.
//!
//! Security (the listener's protocol): on a TLS listener the handshake runs first and the
//! bytes go through `tls.rs` (a plaintext listener reads and writes the socket directly, so
//! Fetch stays zero-copy there). On a SASL listener, until the client has authenticated, only
//! ApiVersions, SaslHandshake and SaslAuthenticate are served, one at a time, frames are
//! limited to `sasl.server.max.receive.size`, any other request closes the connection, and a
//! failed authentication is answered and then closes it: nothing else is served on it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use kafka_protocol::messages::ApiKey;

use super::handlers::{self, Session};
use super::read::read_into;
use super::response::Reply;
use super::throttle;
use super::tls::TlsConn;
use super::write::write_all_vectored;
use crate::protocol::{self, ProtocolError};
use crate::security::{principal, BrokerSecurity, ListenerSpec, SecurityProtocol};
use crate::shard::{ProduceTurn, Shard};

/// Smallest free space offered to one socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Requests up to this size are copied out of the read buffer instead of sliced from it.
const SMALL_FRAME_COPY_BYTES: usize = 16 * 1024;
/// Largest growth of the read buffer per socket read.
const READ_GROWTH_BYTES_MAX: usize = 1024 * 1024;

/// The live connections of one shard, for the connection limit and the shutdown drain.
pub struct Registry {
    limit: usize,
    next_id: Cell<u64>,
    open: RefCell<HashMap<u64, RawFd>>,
    admitted: Cell<usize>,
}

impl Registry {
    /// A registry admitting at most `limit` connections at once.
    pub fn new(limit: usize) -> Self {
        Registry {
            limit,
            next_id: Cell::new(0),
            open: RefCell::new(HashMap::new()),
            admitted: Cell::new(0),
        }
    }

    /// Counts a new connection in, unless the limit is reached.
    pub fn try_admit(&self) -> bool {
        if self.admitted.get() >= self.limit {
            return false;
        }
        self.admitted.set(self.admitted.get() + 1);
        true
    }

    /// Counts a finished connection out.
    pub fn leave(&self) {
        self.admitted.set(self.admitted.get().saturating_sub(1));
    }

    fn register(&self, fd: RawFd) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.open.borrow_mut().insert(id, fd);
        id
    }

    fn unregister(&self, id: u64) {
        self.open.borrow_mut().remove(&id);
    }

    /// Stops reading on every connection (their in-flight requests still get answers) and
    /// waits until all have closed or `timeout` passed.
    pub async fn drain(&self, timeout: Duration) {
        for fd in self.open.borrow().values() {
            // SAFETY: fd belongs to a live connection registered here; SHUT_RD only makes
            // its pending read return end-of-stream.
            unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
        }
        let deadline = Instant::now() + timeout;
        while self.admitted.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the reader, the handler tasks and the writer of one connection share, on one executor.
#[derive(Default)]
struct Flow {
    /// Bytes of finished responses not yet written.
    unsent: Cell<usize>,
    /// A Fetch handler of this connection is running.
    fetching: Cell<bool>,
    /// The writer has stopped: nothing more will be sent.
    closed: Cell<bool>,
    /// The reader, when it waits for one of the above to change.
    reader: Cell<Option<Waker>>,
    /// Muted by a client quota: no request is read before this time (`throttle.rs`).
    throttled_until: Cell<Option<Instant>>,
}

impl Flow {
    fn wake(&self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Waits until `ready` holds or the writer has stopped.
    async fn wait_until(&self, ready: impl Fn(&Flow) -> bool) {
        poll_fn(|cx| {
            if self.closed.get() || ready(self) {
                Poll::Ready(())
            } else {
                self.reader.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Serves one connection of `listener` until the client closes it, it misbehaves, or the
/// shard drains.
pub async fn serve(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    registry: &Registry,
    listener: Arc<ListenerSpec>,
    shared: &BrokerSecurity,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let fd = stream.as_raw_fd();
    let tls = match &listener.tls {
        None => None,
        Some(slot) => {
            let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
            // The configuration in force now: a reload changes it for later connections only.
            match TlsConn::accept(slot.current(), &mut stream, idle).await {
                Ok(t) => Some(Rc::new(t)),
                Err(e) => {
                    tracing::info!(
                        %peer,
                        listener = %listener.name,
                        error = %e,
                        "TLS handshake failed; closing connection"
                    );
                    return;
                }
            }
        }
    };
    // On an SSL listener the principal is the client certificate's mapped subject (Kafka's
    // principal builder); a certificate no mapping rule applies to is refused.
    let ssl_user = match (&tls, listener.protocol) {
        (Some(t), SecurityProtocol::Ssl) => match t.peer_certificate() {
            None => None,
            Some(cert) => match ssl_user_of(&cert, &listener) {
                Ok(user) => Some(user),
                Err(e) => {
                    tracing::info!(
                        %peer,
                        listener = %listener.name,
                        error = %e,
                        "SSL authentication failed; closing connection"
                    );
                    if let Some(t) = &tls {
                        t.close(&mut stream).await;
                    }
                    return;
                }
            },
        },
        _ => None,
    };
    let session = {
        let host = stream
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "?".into());
        Rc::new(Session::new(listener, shared, host, ssl_user))
    };
    let wire = Wire(tls);
    // A second handle on the same socket for the writer task, so reading and writing run
    // independently without a lock.
    // SAFETY: dup of a valid socket fd; the new fd is owned by the TcpStream built from it.
    let wfd = unsafe { libc::dup(fd) };
    if wfd < 0 {
        tracing::warn!(%peer, "dup failed; closing connection");
        return;
    }
    // SAFETY: wfd is a fresh fd for the same connected TCP socket, owned from here on.
    let wstream = unsafe { TcpStream::from_raw_fd(wfd) };
    let id = registry.register(fd);
    let inflight_max = shard.config.connection_inflight_requests_max;
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Reply>>(inflight_max);
    let flow = Rc::new(Flow::default());
    let writer = glommio::spawn_local(write_loop(
        wstream,
        wire.clone(),
        rx,
        peer.clone(),
        flow.clone(),
    ));
    if let Err(e) = read_loop(&shard, stream, &wire, &session, tx, &flow).await {
        tracing::info!(%peer, listener = %session.listener.name, error = %e, "closing connection");
    }
    writer.await;
    registry.unregister(id);
}

/// The user name of an SSL client's certificate: its subject DN mapped by the listener's
/// `ssl.principal.mapping.rules`.
fn ssl_user_of(
    cert: &rustls::pki_types::CertificateDer<'_>,
    listener: &ListenerSpec,
) -> Result<String, String> {
    let dn = principal::subject_dn(cert)?;
    listener.principal_mapper.name(&dn)
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("request of {0} bytes exceeds socket.request.max.bytes")]
    TooLarge(i64),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("responses not read for connections.max.idle.ms ({0} bytes unsent)")]
    Stalled(usize),
    #[error(
        "request of {0} bytes before SASL authentication exceeds sasl.server.max.receive.size"
    )]
    TooLargeBeforeAuth(i64),
    #[error("unexpected Kafka request of type {0:?} during SASL handshake")]
    Unauthenticated(ApiKey),
    #[error("{0}")]
    AuthenticationFailed(String),
    #[error("SASL session expired without re-authentication (connections.max.reauth.ms)")]
    SessionExpired,
}

/// The connection's byte stream: the socket itself, or TLS over it.
#[derive(Clone)]
struct Wire(Option<Rc<TlsConn>>);

impl Wire {
    async fn read_into(
        &self,
        stream: &TcpStream,
        buf: &mut BytesMut,
        want: usize,
        idle: Duration,
    ) -> std::io::Result<usize> {
        match &self.0 {
            None => read_into(stream, buf, want, idle).await,
            Some(tls) => tls.read_into(stream, buf, want, idle).await,
        }
    }

    async fn write_all(&self, stream: &mut TcpStream, parts: &[Bytes]) -> std::io::Result<()> {
        match &self.0 {
            None => write_all_vectored(stream, parts).await,
            Some(tls) => tls.write_all(stream, parts).await,
        }
    }
}

/// A TLS ClientHello starts with record type 22 and version 3.x: read as a Kafka length
/// prefix that is 0x1603_01xx, far over any request limit.
fn looks_like_tls(prefix: &[u8]) -> bool {
    prefix.len() >= 3 && prefix[0] == 0x16 && prefix[1] == 0x03 && prefix[2] <= 0x04
}

async fn read_loop(
    shard: &Rc<Shard>,
    stream: TcpStream,
    wire: &Wire,
    session: &Rc<Session>,
    tx: local_channel::LocalSender<JoinHandle<Reply>>,
    flow: &Rc<Flow>,
) -> Result<(), ConnError> {
    // `connections.max.idle.ms`: a connection that sends nothing for this long is closed.
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    let max = shard.config.socket_request_max_bytes as i64;
    let unsent_max = shard.config.connection_response_buffer_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // Released when the connection's latest Produce has appended (see `ProduceTurn`).
    let mut last_produce: Option<futures_channel::oneshot::Receiver<()>> = None;
    loop {
        if !fill(&stream, wire, &mut buf, 4, idle).await? {
            return Ok(()); // clean end of stream between requests
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
        let unauthenticated = session.needs_authentication();
        let limit = if unauthenticated {
            max.min(session.max_receive_bytes() as i64)
        } else {
            max
        };
        if size < 8 || size > limit {
            if wire.0.is_none() && looks_like_tls(&buf) {
                return Err(ConnError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "a TLS handshake on {} listener {}",
                        session.listener.protocol.name(),
                        session.listener.name
                    ),
                )));
            }
            if size < 8 || size > max {
                return Err(ConnError::TooLarge(size));
            }
            return Err(ConnError::TooLargeBeforeAuth(size));
        }
        let need = 4 + size as usize;
        if !fill(&stream, wire, &mut buf, need, idle).await? {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let mut frame = if need <= SMALL_FRAME_COPY_BYTES {
            // A small request is copied out and the read buffer reused: as a slice it would
            // keep the whole (64 KiB+) read buffer alive for as long as the batch cache holds
            // its records, so 1 KiB batches pinned 64 KiB each (measured: RSS 8.6x Kafka's with
            // 1,000 producers at a low rate).
            let f = Bytes::copy_from_slice(&buf[4..need]);
            buf.advance(need);
            f
        } else {
            let mut f = buf.split_to(need).freeze();
            f.advance(4);
            f
        };
        let header = match protocol::decode_request_header(&mut frame, handlers::SUPPORTED_APIS) {
            Ok(h) => h,
            Err(e) => {
                if matches!(
                    e,
                    ProtocolError::UnsupportedApi(_) | ProtocolError::UnsupportedVersion { .. }
                ) {
                    let client = protocol::peek_client_id(&frame).unwrap_or_default();
                    super::refusal::log_refusal(&client, "(request header)", &e);
                }
                return Err(e.into());
            }
        };
        let sasl_exchange = session.listener.sasl.is_some()
            && (header.request_api_key == ApiKey::SaslHandshake as i16
                || header.request_api_key == ApiKey::SaslAuthenticate as i16);
        // KIP-368: after the session ended, only a re-authentication's handshake is served.
        if !unauthenticated
            && header.request_api_key != ApiKey::SaslHandshake as i16
            && session.session_expired()
        {
            return Err(ConnError::SessionExpired);
        }
        if unauthenticated || sasl_exchange {
            // Before authentication (or re-authentication): the SASL exchange only, one
            // request at a time, answered in order after what is in flight.
            let key = ApiKey::try_from(header.request_api_key)
                .map_err(|_| ProtocolError::UnsupportedApi(header.request_api_key))?;
            if !matches!(
                key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            ) {
                return Err(ConnError::Unauthenticated(key));
            }
            let conn = handlers::ConnInfo {
                drained: flow.unsent.get() == 0,
                throttle_time_ms: 0,
                fetch_quota_bytes: usize::MAX,
            };
            let reply = handlers::dispatch(shard, conn, session, header, frame, None).await;
            if let Ok(Some(r)) = &reply {
                flow.unsent.set(flow.unsent.get() + r.len());
            }
            let task = glommio::spawn_local(async move { reply }).detach();
            if tx.send(task).await.is_err() {
                return Ok(());
            }
            if let Some(why) = session.failure() {
                // Answered; the writer sends it and closes the connection after.
                return Err(ConnError::AuthenticationFailed(why));
            }
            continue;
        }
        // Throttled by a client quota (Kafka mutes the channel): read on only after it.
        if let Some(until) = flow.throttled_until.take() {
            let now = Instant::now();
            if until > now {
                glommio::timer::sleep(until - now).await;
            }
        }
        let is_fetch = header.request_api_key == ApiKey::Fetch as i16;
        let is_produce = header.request_api_key == ApiKey::Produce as i16;
        let version = header.request_api_version;
        let account = throttle::Account::open(
            &session.quotas,
            || session.principal(),
            header.client_id.as_deref().unwrap_or(""),
        );
        let produce_throttle = match &account {
            Some(a) if is_produce => a.produce(frame.len()),
            _ => 0,
        };
        if produce_throttle > 0 {
            flow.throttled_until.set(Some(
                Instant::now() + Duration::from_millis(produce_throttle),
            ));
        }
        let turn = is_produce.then(|| {
            let (done, next) = futures_channel::oneshot::channel();
            ProduceTurn {
                previous: last_produce.replace(next),
                done,
            }
        });
        let muted = |f: &Flow| f.unsent.get() > unsent_max || (is_fetch && f.fetching.get());
        // Muted: wait, closing the connection only when nothing drained for the idle time.
        while muted(flow) && !flow.closed.get() {
            let before = flow.unsent.get();
            let wait = async {
                flow.wait_until(|f| !muted(f) || f.unsent.get() < before)
                    .await;
                Ok(())
            };
            if glommio::timer::timeout(idle, wait).await.is_err() {
                // Wake the writer, parked on a send the client never reads.
                // SAFETY: shutting down our own connected socket (the stream is still open).
                unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
                return Err(ConnError::Stalled(flow.unsent.get()));
            }
        }
        if flow.closed.get() {
            return Ok(()); // writer gone: the socket failed
        }
        if is_fetch {
            flow.fetching.set(true);
        }
        let conn = handlers::ConnInfo {
            drained: flow.unsent.get() == 0,
            throttle_time_ms: i32::try_from(produce_throttle).unwrap_or(i32::MAX),
            fetch_quota_bytes: match &account {
                Some(a) if is_fetch => a.fetch_allowance(),
                _ => usize::MAX,
            },
        };
        let shard = shard.clone();
        let done = flow.clone();
        let session = session.clone();
        let task = glommio::spawn_local(async move {
            let served = handlers::dispatch(&shard, conn, &session, header, frame, turn);
            let (mut reply, busy) = match &account {
                None => (served.await, Duration::ZERO),
                Some(_) => throttle::Timed::new(served).await,
            };
            if let Some(a) = &account {
                let ms = a.finish(
                    &mut reply,
                    is_fetch.then_some(version),
                    busy,
                    produce_throttle,
                );
                if ms > 0 {
                    let until = Instant::now() + Duration::from_millis(ms);
                    let later = done.throttled_until.get().map_or(until, |u| u.max(until));
                    done.throttled_until.set(Some(later));
                }
            }
            if let Ok(Some(r)) = &reply {
                done.unsent.set(done.unsent.get() + r.len());
            }
            if is_fetch {
                done.fetching.set(false);
            }
            done.wake();
            reply
        })
        .detach();
        if tx.send(task).await.is_err() {
            return Ok(()); // writer gone: the socket failed
        }
    }
}

/// Reads until `buf` holds at least `need` bytes. False on end of stream before any byte of
/// a new frame; an error if the stream ends inside one.
async fn fill(
    stream: &TcpStream,
    wire: &Wire,
    buf: &mut BytesMut,
    need: usize,
    idle: Duration,
) -> Result<bool, ConnError> {
    while buf.len() < need {
        let have = buf.len();
        // Memory follows the bytes that actually arrived: a length prefix alone (a client that
        // announces 100 MiB and sends nothing) reserves at most one chunk.
        let want = (need - have).clamp(READ_CHUNK_BYTES, READ_GROWTH_BYTES_MAX);
        let n = wire.read_into(stream, buf, want, idle).await?;
        if n == 0 {
            if have == 0 {
                return Ok(false);
            }
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(true)
}

async fn write_loop(
    mut stream: TcpStream,
    wire: Wire,
    rx: local_channel::LocalReceiver<JoinHandle<Reply>>,
    peer: String,
    flow: Rc<Flow>,
) {
    while let Some(task) = rx.recv().await {
        let reply = match task.await {
            Some(r) => r,
            None => Err(ProtocolError::Encode("handler cancelled".into())),
        };
        match reply {
            Ok(Some(response)) => {
                let written = wire.write_all(&mut stream, &response.parts).await;
                flow.unsent
                    .set(flow.unsent.get().saturating_sub(response.len()));
                // Its buffers and fetch memory go back before the reader is woken.
                drop(response);
                flow.wake();
                if let Err(e) = written {
                    tracing::debug!(%peer, error = %e, "write failed");
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(%peer, error = %e, "request failed; closing connection");
                break;
            }
        }
    }
    // Wake the reader if it is still blocked, and stop accepting its requests.
    flow.closed.set(true);
    flow.wake();
    if let Some(tls) = &wire.0 {
        tls.close(&mut stream).await;
    }
    // SAFETY: shutting down our own connected socket.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
    // Drain what the reader already queued so it is not blocked on a full channel.
    while let Some(task) = rx.recv().await {
        drop(task);
    }
}
