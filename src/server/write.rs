//! Vectored socket writes: a response goes out as the list of buffers it is made of.
//!
//! glommio's `TcpStream` writes one slice at a time. A Fetch response is a header slice
//! followed by many batch buffers, so this writes them with `sendmsg` over an iovec array
//! (no copy into a response buffer). When the socket is full (`EAGAIN`) it falls back to
//! glommio's own write of the next slice, which parks on the ring until the socket is
//! writable; then vectored writes resume.

use std::io;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

/// Largest iovec array handed to one `sendmsg` (Linux's IOV_MAX is 1024).
const IOVECS_PER_SEND_MAX: usize = 256;

/// Writes every byte of `parts`, in order.
pub async fn write_all_vectored(stream: &mut TcpStream, parts: &[Bytes]) -> io::Result<()> {
    let mut idx = 0usize; // first part not fully written
    let mut off = 0usize; // bytes of parts[idx] already written
    while idx < parts.len() {
        if parts[idx].len() == off {
            idx += 1;
            off = 0;
            continue;
        }
        let n = match send_vectored(stream.as_raw_fd(), &parts[idx..], off) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.write(&parts[idx][off..]).await?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Advance over what was written.
        let mut left = n;
        while left > 0 && idx < parts.len() {
            let avail = parts[idx].len() - off;
            if left >= avail {
                left -= avail;
                idx += 1;
                off = 0;
            } else {
                off += left;
                left = 0;
            }
        }
    }
    Ok(())
}

/// One non-blocking `sendmsg` of up to [`IOVECS_PER_SEND_MAX`] buffers, the first from `off`.
fn send_vectored(fd: i32, parts: &[Bytes], off: usize) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(parts.len().min(IOVECS_PER_SEND_MAX));
    for (i, p) in parts.iter().enumerate().take(IOVECS_PER_SEND_MAX) {
        let s = if i == 0 { &p[off..] } else { &p[..] };
        if s.is_empty() {
            continue;
        }
        iov.push(libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        });
    }
    // SAFETY: msghdr is plain data; zeroed is a valid "no name, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: every iovec points into a live `Bytes` borrowed for this call; fd is a socket.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
