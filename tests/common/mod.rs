//! Test support: start the real broker binary on a free loopback port with a temp data dir.
#![allow(dead_code)]

pub mod cluster;
pub mod loop_fs;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker process; stopped (SIGKILL) and its data removed when dropped.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub cores: usize,
    pub extra: Vec<String>,
    /// Where the broker's stderr goes; `None`: `<data dir>.log`, read by [`Broker::log`].
    pub log_to: Option<PathBuf>,
    /// `RLIMIT_NOFILE` (soft and hard) the broker process starts with; `None`: inherited.
    pub open_files_limit: Option<u64>,
}

/// `shardlog load` arguments for a test: one unpinned core (tests share the machine with
/// other test binaries), quiet, a 3 s connect timeout, everything else from the workload.
pub fn load_args(
    bootstrap: String,
    workload: PathBuf,
    out: PathBuf,
) -> shardlog_tools::load::LoadArgs {
    shardlog_tools::load::LoadArgs {
        bootstrap,
        workload,
        out,
        duration: None,
        warmup: None,
        rate: None,
        acks: None,
        cores: Some(1),
        max_from: None,
        topic_prefix: None,
        first_cpu: 0,
        no_pin: true,
        quiet: true,
        connect_timeout_ms: 3000,
        consumers: None,
        messages: None,
        consume_existing: false,
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A temp dir on the same file system as the repo (ext4: O_DIRECT works there, unlike tmpfs).
pub fn temp_data_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("target tmpdir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// How long a broker may take to answer after its start: a bound, not a speed claim. A restart
/// re-opens every partition (5,000 in tests/many_partitions.rs), and the suite shares 2 cores
/// with parallel test binaries; 20 s was crossed at load average ~24.
const BROKER_START_MAX: Duration = Duration::from_secs(60);

impl Broker {
    /// Starts a broker with `cores` shards and extra `--set KEY=VALUE` properties.
    pub fn start(cores: usize, extra: &[&str]) -> Broker {
        Broker::launch(None, cores, extra, None, None)
    }

    /// Starts a broker like [`Broker::start`] whose stderr (its log) goes to `log_to`, an
    /// existing file or device such as `/dev/full`.
    pub fn start_logging_to(cores: usize, extra: &[&str], log_to: &Path) -> Broker {
        Broker::launch(None, cores, extra, Some(log_to), None)
    }

    /// Starts a broker on an existing data dir (kept when dropped); its log goes next to it.
    pub fn start_in(data_dir: &Path, cores: usize, extra: &[&str]) -> Broker {
        Broker::launch(Some(data_dir), cores, extra, None, None)
    }

    /// Starts a broker like [`Broker::start`] whose open-file limit (soft and hard) is `limit`.
    pub fn start_with_open_files_limit(cores: usize, extra: &[&str], limit: u64) -> Broker {
        Broker::launch(None, cores, extra, None, Some(limit))
    }

    /// Starts a broker on `data_dir` (kept), or on a fresh temp dir (removed when dropped).
    fn launch(
        data_dir: Option<&Path>,
        cores: usize,
        extra: &[&str],
        log_to: Option<&Path>,
        open_files_limit: Option<u64>,
    ) -> Broker {
        let tmp = data_dir.is_none().then(temp_data_dir);
        let data_dir = match (&tmp, data_dir) {
            (Some(t), _) => t.path().to_path_buf(),
            (None, Some(d)) => d.to_path_buf(),
            (None, None) => unreachable!("a temp dir is made when none is given"),
        };
        let mut b = Broker {
            child: None,
            port: free_port(),
            data_dir,
            _tmp: tmp,
            cores,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_to: log_to.map(Path::to_path_buf),
            open_files_limit,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardlog"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string());
        for kv in &self.extra {
            cmd.arg("--set").arg(kv);
        }
        let log = match &self.log_to {
            Some(path) => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("log target"),
            None => std::fs::File::create(self.data_dir.with_extension("log")).expect("log file"),
        };
        cmd.stdout(Stdio::null()).stderr(log);
        if let Some(limit) = self.open_files_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start shardlog");
        self.child = Some(child);
        self.wait_ready();
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        if self.log_to.is_some() {
            return String::new();
        }
        // Lossy: a log with one invalid UTF-8 byte must still be shown, not read as "".
        match std::fs::read(self.data_dir.with_extension("log")) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(broker log unreadable: {e})"),
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + BROKER_START_MAX;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("broker exited early with {status}: {}", self.log());
                }
            }
            if self.answers_api_versions() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        panic!(
            "broker did not start listening: {}\n--- threads of pid {pid} ---\n{}",
            self.log(),
            thread_dump(pid)
        );
    }

    /// True when the broker answers an ApiVersions request. A bare connect is not enough: on
    /// loopback, connecting to a free ephemeral port can connect the socket to itself.
    fn answers_api_versions(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if s.local_addr().map(|a| a.port()).ok() == Some(self.port) {
            return false; // TCP self-connect
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        // ApiVersions v0, correlation id 1, client id "ready".
        let mut req = vec![0, 18, 0, 0, 0, 0, 0, 1, 0, 5];
        req.extend_from_slice(b"ready");
        matches!(roundtrip(&mut s, &req), Ok(frame) if frame.len() >= 6 && frame[..4] == [0, 0, 0, 1])
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The process id, if a broker process was started and not yet stopped or killed.
    pub fn running_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops with SIGTERM and waits; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills with SIGKILL (no clean shutdown) and waits, also for its listening sockets to go.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            wait_port_released(self.port);
        }
    }

    /// Starts the broker again on the same port and data dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("broker had exited with {status}");
            }
        }
        self.kill9();
        if std::env::var_os("SHARDLOG_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(self.data_dir.with_extension("log"));
        } else {
            eprintln!(
                "broker log kept: {}",
                self.data_dir.with_extension("log").display()
            );
        }
    }
}

/// Each thread of `pid`: name, state, kernel wait channel; then a gdb backtrace if gdb is
/// installed (for a broker that hangs).
pub fn thread_dump(pid: u32) -> String {
    let mut out = String::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let read = |f: &str| {
                std::fs::read_to_string(t.path().join(f))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let stat = read("stat");
            let state = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.chars().next().unwrap_or('?'))
                .unwrap_or('?');
            out.push_str(&format!(
                "{} {} state={state} wchan={}\n",
                t.file_name().to_string_lossy(),
                read("comm"),
                read("wchan")
            ));
        }
    }
    // Its open descriptors: where stderr (the log) points, and anything unexpected.
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        let mut list: Vec<(u32, String)> = fds
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((n, target.to_string_lossy().into_owned()))
            })
            .collect();
        list.sort();
        out.push_str(&format!("--- {} open descriptors ---\n", list.len()));
        for (n, target) in list.iter().take(40) {
            out.push_str(&format!("fd {n} -> {target}\n"));
        }
    }
    if let Ok(o) = Command::new("timeout")
        .args([
            "30",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output()
    {
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

/// Waits (up to 10 s) until nothing listens on loopback `port`. A process killed with SIGKILL
/// is reaped before io_uring's deferred teardown closes the sockets its pending accepts hold:
/// for some milliseconds its listeners still take connections (and then reset them), and with
/// SO_REUSEPORT a restarted broker binds next to them.
pub fn wait_port_released(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // Binding without SO_REUSEPORT fails while any socket listens on the port.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one request frame (`payload` without the size prefix) and reads one response frame.
pub fn roundtrip(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(&(payload.len() as i32).to_be_bytes())?;
    stream.write_all(payload)?;
    read_frame(stream)
}

/// Reads one size-prefixed frame.
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Sends one request built with `kafka-protocol` and returns the response body (after the
/// response header), ready for `Decodable::decode` at the same version.
pub fn request<R: kafka_protocol::protocol::Encodable>(
    stream: &mut TcpStream,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    body: &R,
) -> bytes::Bytes {
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    let frame = roundtrip(stream, &buf).expect("roundtrip");
    let mut b = bytes::Bytes::from(frame);
    ResponseHeader::decode(&mut b, key.response_header_version(version)).expect("response header");
    b
}

/// The sum of every sample of the Prometheus family `name` served at
/// `http://127.0.0.1:{metrics_port}/metrics` (a broker started with `metrics.listen`).
pub fn metric_sum(metrics_port: u16, name: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read metrics");
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
