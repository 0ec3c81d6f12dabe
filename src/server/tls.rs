//! The TLS record layer of one connection: rustls' `ServerConnection` between the socket and
//! the connection's reader and writer.
//!
//! The handshake runs first, alone, bounded by [`TLS_HANDSHAKE_TIMEOUT_MS`]; a client that
//! speaks something else (a plaintext Kafka request on a TLS port), stops half-way (a
//! truncated ClientHello) or fails certificate checks gets rustls' alert and the connection
//! is closed. Then the reader decrypts what it reads and the writer encrypts each response
//! in chunks of [`TLS_WRITE_CHUNK_BYTES`]. Both share the one rustls state through a
//! `RefCell` on the connection's executor; a borrow is never held across an await. Only the
//! writer writes to the socket, so records go out in the order rustls made them: TLS
//! messages the reader causes (a KeyUpdate answer) go out with the next response.
//!
//! Fetch data over TLS is encrypted in user space (copied once into the record buffer); the
//! plaintext listener's zero-copy path does not go through here.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::read::read_into;

/// Longest a TLS handshake may take before the connection is closed.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Plaintext encrypted per socket write of a response.
const TLS_WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// Ciphertext read per socket read (a TLS record is at most ~16.7 KiB).
const TLS_READ_CHUNK_BYTES: usize = 64 * 1024;

/// One connection's TLS state, shared by its reader and writer.
pub struct TlsConn {
    conn: RefCell<ServerConnection>,
    /// Ciphertext read from the socket and not yet given to rustls.
    incoming: RefCell<BytesMut>,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl TlsConn {
    /// Runs the server side of the handshake on `stream`. On failure the alert rustls made
    /// (if any) is sent before the error is returned.
    pub async fn accept(
        config: Arc<ServerConfig>,
        stream: &mut TcpStream,
        idle: Duration,
    ) -> io::Result<TlsConn> {
        let conn = ServerConnection::new(config).map_err(tls_err)?;
        let tls = TlsConn {
            conn: RefCell::new(conn),
            incoming: RefCell::new(BytesMut::new()),
        };
        let deadline = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS).min(idle);
        match glommio::timer::timeout(deadline, async {
            tls.handshake(stream, deadline)
                .await
                .map_err(glommio::GlommioError::from)
        })
        .await
        {
            Ok(()) => Ok(tls),
            Err(glommio::GlommioError::IoError(e)) => Err(e),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake not finished in {} ms ({e})",
                    deadline.as_millis()
                ),
            )),
        }
    }

    async fn handshake(&self, stream: &mut TcpStream, deadline: Duration) -> io::Result<()> {
        loop {
            self.flush(stream).await?;
            if !self.conn.borrow().is_handshaking() {
                return Ok(());
            }
            // Bytes already read (a client's flight after our answer) before the socket.
            match self.absorb() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    let _ = self.flush(stream).await;
                    return Err(e);
                }
            }
            let mut incoming = std::mem::take(&mut *self.incoming.borrow_mut());
            let n = read_into(stream, &mut incoming, TLS_READ_CHUNK_BYTES, deadline).await?;
            *self.incoming.borrow_mut() = incoming;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the TLS handshake",
                ));
            }
            if let Err(e) = self.absorb() {
                // Send the alert rustls queued, best effort, then fail.
                let _ = self.flush(stream).await;
                return Err(e);
            }
        }
    }

    /// Gives buffered ciphertext to rustls and processes it, until rustls holds plaintext
    /// (it refuses more ciphertext until that is read: `wants_read`) or nothing is left.
    /// True when it took any bytes.
    fn absorb(&self) -> io::Result<bool> {
        let mut incoming = self.incoming.borrow_mut();
        let mut conn = self.conn.borrow_mut();
        let mut progress = false;
        while !incoming.is_empty() && conn.wants_read() {
            let used = conn.read_tls(&mut &incoming[..])?;
            incoming.advance(used);
            conn.process_new_packets().map_err(tls_err)?;
            if used == 0 {
                break;
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Writes everything rustls has queued for the peer.
    async fn flush(&self, stream: &mut TcpStream) -> io::Result<()> {
        loop {
            let out = {
                let mut conn = self.conn.borrow_mut();
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
                out
            };
            if out.is_empty() {
                return Ok(());
            }
            stream.write_all(&out).await?;
        }
    }

    /// The client's certificate (the leaf of the chain it sent), once the handshake is done;
    /// `None` when it sent none (`ssl.client.auth` none, or requested and not given).
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        let conn = self.conn.borrow();
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.clone().into_owned())
    }

    /// Reads at least one plaintext byte into `buf` (0: the peer closed), reserving room for
    /// `want` first; waits at most `idle` for the socket.
    pub async fn read_into(
        &self,
        stream: &TcpStream,
        buf: &mut BytesMut,
        want: usize,
        idle: Duration,
    ) -> io::Result<usize> {
        loop {
            {
                let mut conn = self.conn.borrow_mut();
                let start = buf.len();
                buf.resize(start + want.max(1), 0);
                let r = conn.reader().read(&mut buf[start..]);
                match r {
                    Ok(n) => {
                        buf.truncate(start + n);
                        return Ok(n); // 0: close_notify received
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(start),
                    Err(e) => {
                        buf.truncate(start);
                        return Err(e);
                    }
                }
            }
            // No plaintext: first the ciphertext already read, then the socket.
            if self.absorb()? {
                continue;
            }
            let mut incoming = std::mem::take(&mut *self.incoming.borrow_mut());
            let n = read_into(stream, &mut incoming, TLS_READ_CHUNK_BYTES, idle).await?;
            *self.incoming.borrow_mut() = incoming;
            if n == 0 {
                return Ok(0); // closed without close_notify: the end of the stream all the same
            }
            self.absorb()?;
        }
    }

    /// Encrypts and writes every byte of `parts`, in order.
    pub async fn write_all(&self, stream: &mut TcpStream, parts: &[Bytes]) -> io::Result<()> {
        let (mut idx, mut off) = (0usize, 0usize);
        loop {
            let out = {
                let mut conn = self.conn.borrow_mut();
                let mut out = Vec::new();
                let mut taken = 0usize;
                while idx < parts.len() && taken < TLS_WRITE_CHUNK_BYTES {
                    let part = &parts[idx][off..];
                    let end = part.len().min(TLS_WRITE_CHUNK_BYTES - taken);
                    let n = conn.writer().write(&part[..end])?;
                    taken += n;
                    off += n;
                    if off == parts[idx].len() {
                        idx += 1;
                        off = 0;
                    }
                    if n == 0 || conn.wants_write() {
                        // Move the records out (rustls' send buffer is bounded).
                        while conn.wants_write() {
                            conn.write_tls(&mut out)?;
                        }
                        if n == 0 && end > 0 {
                            break;
                        }
                    }
                }
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
                out
            };
            if !out.is_empty() {
                stream.write_all(&out).await?;
            } else if idx >= parts.len() {
                return Ok(());
            }
        }
    }

    /// Queues close_notify and sends it with whatever else is pending, best effort (for at
    /// most a second: a peer that reads nothing more does not hold the connection open).
    pub async fn close(&self, stream: &mut TcpStream) {
        self.conn.borrow_mut().send_close_notify();
        let flush = async {
            self.flush(stream)
                .await
                .map_err(glommio::GlommioError::from)
        };
        let _ = glommio::timer::timeout(Duration::from_secs(1), flush).await;
    }
}
