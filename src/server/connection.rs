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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use kafka_protocol::messages::ApiKey;

use super::handlers;
use super::read::read_into;
use super::response::Reply;
use super::write::write_all_vectored;
use crate::protocol::{self, ProtocolError};
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

/// Serves one connection until the client closes it, it misbehaves, or the shard drains.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, registry: &Registry) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let fd = stream.as_raw_fd();
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
    let writer = glommio::spawn_local(write_loop(wstream, rx, peer.clone(), flow.clone()));
    if let Err(e) = read_loop(&shard, stream, tx, &flow).await {
        tracing::info!(%peer, error = %e, "closing connection");
    }
    writer.await;
    registry.unregister(id);
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
}

async fn read_loop(
    shard: &Rc<Shard>,
    stream: TcpStream,
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
        if !fill(&stream, &mut buf, 4, idle).await? {
            return Ok(()); // clean end of stream between requests
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
        if size < 8 || size > max {
            return Err(ConnError::TooLarge(size));
        }
        let need = 4 + size as usize;
        if !fill(&stream, &mut buf, need, idle).await? {
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
        let is_fetch = header.request_api_key == ApiKey::Fetch as i16;
        let turn = (header.request_api_key == ApiKey::Produce as i16).then(|| {
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
        };
        let shard = shard.clone();
        let done = flow.clone();
        let task = glommio::spawn_local(async move {
            let reply = handlers::dispatch(&shard, conn, header, frame, turn).await;
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
    buf: &mut BytesMut,
    need: usize,
    idle: Duration,
) -> Result<bool, ConnError> {
    while buf.len() < need {
        let have = buf.len();
        // Memory follows the bytes that actually arrived: a length prefix alone (a client that
        // announces 100 MiB and sends nothing) reserves at most one chunk.
        let want = (need - have).clamp(READ_CHUNK_BYTES, READ_GROWTH_BYTES_MAX);
        let n = read_into(stream, buf, want, idle).await?;
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
                let written = write_all_vectored(&mut stream, &response.parts).await;
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
    // SAFETY: shutting down our own connected socket.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
    // Drain what the reader already queued so it is not blocked on a full channel.
    while let Some(task) = rx.recv().await {
        drop(task);
    }
}
