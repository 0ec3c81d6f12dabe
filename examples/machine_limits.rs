//! The limits of this machine, measured the same way each time so broker figures can be given
//! as ratios of them (perf/RESULTS.md): loopback TCP bandwidth, sequential O_DIRECT write rate,
//! and fdatasync latency of a 4 KiB append.
//!
//! `cargo run --release --example machine_limits -- DIR [SECONDS]` (DIR on the broker's file
//! system; a scratch file is written there and removed).

use shardlog_tools::hist::{LatencyHistogram, Percentiles};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::time::Instant;

/// An aligned heap buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: layout has a non-zero size; the memory is freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Self { ptr, len, layout }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

fn loopback_bandwidth(secs: f64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&chunk).expect("write");
    }
    drop(s);
    let total = reader.join().expect("reader");
    total as f64 / start.elapsed().as_secs_f64()
}

fn odirect_write(dir: &std::path::Path, secs: f64) -> f64 {
    let path = dir.join(".machine-limits-odirect");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open O_DIRECT (tmpfs refuses it: give a directory on ext4/XFS)");
    let buf = Aligned::new(1 << 20);
    let start = Instant::now();
    let mut off: u64 = 0;
    while start.elapsed().as_secs_f64() < secs && off < (4 << 30) {
        // SAFETY: fd is open; the buffer is 4 KiB aligned and len bytes long.
        let n = unsafe {
            libc::pwrite(
                f.as_raw_fd(),
                buf.as_slice().as_ptr().cast(),
                buf.len,
                off as libc::off_t,
            )
        };
        assert!(n == buf.len as isize, "O_DIRECT write failed");
        off += n as u64;
    }
    let rate = off as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    rate
}

fn fdatasync_latency(dir: &std::path::Path, secs: f64) -> LatencyHistogram {
    let path = dir.join(".machine-limits-fsync");
    let mut f = std::fs::File::create(&path).expect("create");
    let page = [1u8; 4096];
    let mut h = LatencyHistogram::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&page).expect("write");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        h.record_ns(t.elapsed().as_nanos() as u64);
    }
    let _ = std::fs::remove_file(&path);
    h
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let secs: f64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let lo = loopback_bandwidth(secs);
    println!("loopback TCP, 1 stream, 1 MiB writes: {:.0} MB/s", lo / 1e6);
    let od = odirect_write(&dir, secs);
    println!("O_DIRECT sequential 1 MiB writes:     {:.0} MB/s", od / 1e6);
    let h = fdatasync_latency(&dir, secs);
    let p = Percentiles::of(&h);
    println!(
        "fdatasync after a 4 KiB append ({} calls): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        h.len(),
        p.p50 as f64 / 1000.0,
        p.p99 as f64 / 1000.0,
        p.max as f64 / 1000.0
    );
}
