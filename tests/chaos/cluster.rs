//! The fault harness: a cluster of real shardlog processes, each in a network namespace of its
//! own, and the faults a test injects into it.
//!
//! **Network.** [`Net`] makes a Linux bridge in the test's namespace and, per node, a network
//! namespace joined to the bridge by a veth pair; node i gets `10.254.K.i/24` (K picked free at
//! creation), the test's side `10.254.K.254`. Nothing is routed anywhere else: the namespaces
//! have no default route, and the bridge forwards only between its own ports. Faults on links
//! are nftables rules in the sending node's namespace (table `inet chaos`, chain `out` on the
//! output hook): a cut drops every packet to the peer silently (TCP stalls and times out, as on
//! a real partition), loss drops a random share (`numgen random`). Added latency would need the
//! `netem` qdisc, which this machine's kernel does not have: not offered. Everything is removed
//! when the [`Net`] is dropped.
//!
//! **Nodes.** [`Cluster`] formats N data dirs with one cluster id and starts N `shardlog serve`
//! processes with `ip netns exec` (which execs: the pid is the broker's), the first
//! `controllers` of them combined broker+controller nodes. Faults: kill -9 and restart,
//! SIGSTOP/SIGCONT, partitions between chosen nodes (both ways or one way), a full disk on a
//! node whose data dir is a loop-mounted ext4 image ([`SmallDisk`]).
//!
//! Needs root (network namespaces, mounts).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::loop_fs::{run, LoopFs};

/// The client port of every node (each node has an address of its own).
pub const CLIENT_PORT: u16 = 9092;
/// The controller (quorum) port of every controller node.
pub const CONTROLLER_PORT: u16 = 9093;

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

/// The namespaces, veths and bridge of one test, with the partitions in force.
pub struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
    /// Namespaces (1-based node numbers) holding fault rules.
    dirty: BTreeSet<usize>,
}

/// True when a process with id `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces (and the node processes in them), bridges and mounts of chaos runs
/// whose test process is gone (killed before its `Drop`s ran). Names carry the owner's pid:
/// `sl<pid, 6 hex digits><counter, 2 hex digits>n<i>`, `sl<pid><counter>br`,
/// `chaos-<pid>-*` directories.
fn sweep_stale() {
    fn owner(name: &str) -> Option<(u32, &str)> {
        let rest = name.strip_prefix("sl")?;
        let (tag, tail) = (rest.get(..8)?, rest.get(8..)?);
        let pid = u32::from_str_radix(tag.get(..6)?, 16).ok()?;
        let node = tail.strip_prefix('n')?;
        (tag.chars().all(|c| c.is_ascii_hexdigit())
            && !node.is_empty()
            && node.chars().all(|c| c.is_ascii_digit()))
        .then_some((pid, tag))
    }
    let listed = Command::new("ip").args(["netns", "list"]).output();
    let listed = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    for line in listed.unwrap_or_default().lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        match owner(ns) {
            Some((pid, tag)) if !alive(pid) => {
                let pids = Command::new("ip").args(["netns", "pids", ns]).output();
                let pids = pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                for p in pids.unwrap_or_default().split_whitespace() {
                    if let Ok(p) = p.parse::<i32>() {
                        // SAFETY: a node process of a dead chaos run, in its namespace.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
                let _ = ip(&["netns", "del", ns]);
                let _ = ip(&["link", "del", &format!("sl{tag}br")]);
            }
            _ => {}
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let base = env!("CARGO_TARGET_TMPDIR");
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(rest) = m.strip_prefix(base).and_then(|r| r.strip_prefix("/chaos-")) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = run(Command::new("umount").arg(m));
        }
    }
}

/// `nft` in node `i`'s namespace.
fn nft(ns: &str, args: &[&str]) -> Result<(), String> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args))
    .map_err(|e| {
        if e.contains("No such file") {
            format!("{e} (nft is missing: scripts/install-deps installs nftables)")
        } else {
            e
        }
    })
}

impl Net {
    /// Creates the bridge and `nodes` namespaces (at most 200), after removing what a killed
    /// earlier run left behind.
    pub fn create(nodes: usize) -> Result<Net, String> {
        assert!((1..=200).contains(&nodes), "1..=200 nodes");
        // One creation at a time in this process: the subnet is picked from what is in use.
        static CREATE: std::sync::Mutex<u8> = std::sync::Mutex::new(0);
        let mut count = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.wrapping_add(1);
        sweep_stale();
        // Interface names are at most 15 bytes: "sl", the pid in 6 hex digits, a counter in 2,
        // a suffix of at most 3.
        let tag = format!("sl{:06x}{:02x}", std::process::id(), *count);
        let used = Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .map_err(|e| format!("ip addr: {e}"))?;
        let used = String::from_utf8_lossy(&used.stdout).into_owned();
        let subnet = (1..=250u8)
            .map(|k| ((std::process::id() as usize + k as usize) % 250) as u8 + 1)
            .find(|k| !used.contains(&format!("10.254.{k}.")))
            .ok_or("no free 10.254.K.0/24 subnet")?;
        let mut net = Net {
            tag,
            subnet,
            nodes: 0,
            dirty: BTreeSet::new(),
        };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.254.{subnet}.254/24"),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=nodes {
            let ns = net.ns(i);
            let outer = format!("{}v{i}", net.tag);
            ip(&["netns", "add", &ns])?;
            net.nodes = i;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &outer, "master", &br])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            nft(&ns, &["add", "table", "inet", "chaos"])?;
            nft(
                &ns,
                &[
                    "add",
                    "chain",
                    "inet",
                    "chaos",
                    "out",
                    "{ type filter hook output priority 0 ; }",
                ],
            )?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The namespace of node `i` (1-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The address of node `i` (1-based).
    pub fn addr(&self, i: usize) -> String {
        format!("10.254.{}.{i}", self.subnet)
    }

    /// The address of the test process (the clients) on the bridge.
    pub fn client_addr(&self) -> String {
        format!("10.254.{}.254", self.subnet)
    }

    fn drop_rule(&mut self, from: usize, to: &str, percent: u32) -> Result<(), String> {
        let ns = self.ns(from);
        let mut rule = vec!["add", "rule", "inet", "chaos", "out", "ip", "daddr", to];
        let share = format!("{}", percent.min(100));
        if percent < 100 {
            rule.extend(["numgen", "random", "mod", "100", "<", &share]);
        }
        rule.push("drop");
        nft(&ns, &rule)?;
        self.dirty.insert(from);
        Ok(())
    }

    /// Silently drops every packet node `from` sends to node `to` (a one-way cut: TCP between
    /// them stalls both ways, as nothing from `from` reaches `to`).
    pub fn cut_one_way(&mut self, from: usize, to: usize) -> Result<(), String> {
        let to = self.addr(to);
        self.drop_rule(from, &to, 100)
    }

    /// Partitions the nodes of `side` from every other node (both ways). The test process
    /// (the clients) still reaches every node.
    pub fn partition(&mut self, side: &[usize]) -> Result<(), String> {
        for &a in side {
            for b in 1..=self.nodes {
                if !side.contains(&b) {
                    self.cut_one_way(a, b)?;
                    self.cut_one_way(b, a)?;
                }
            }
        }
        Ok(())
    }

    /// Drops `percent` % of the packets both ways between node `a` and every other node and
    /// the clients.
    pub fn lossy(&mut self, a: usize, percent: u32) -> Result<(), String> {
        for b in 1..=self.nodes {
            if b != a {
                let (addr_a, addr_b) = (self.addr(a), self.addr(b));
                self.drop_rule(a, &addr_b, percent)?;
                self.drop_rule(b, &addr_a, percent)?;
            }
        }
        let client = self.client_addr();
        self.drop_rule(a, &client, percent)
    }

    /// Removes every fault rule.
    pub fn heal(&mut self) -> Result<(), String> {
        for i in std::mem::take(&mut self.dirty) {
            nft(&self.ns(i), &["flush", "chain", "inet", "chaos", "out"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            // Deleting the namespace deletes its veth end and so the pair.
            if let Err(e) = ip(&["netns", "del", &self.ns(i)]) {
                eprintln!("chaos: {e}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge()]) {
            eprintln!("chaos: {e}");
        }
    }
}

/// A small loop-mounted ext4 file system with a ballast file that fills it on demand;
/// unmounted and removed when dropped.
pub struct SmallDisk {
    pub mount: PathBuf,
    ballast: PathBuf,
    _fs: LoopFs,
}

impl SmallDisk {
    /// Makes and mounts a `bytes` image under `base`.
    pub fn make(base: &Path, bytes: u64) -> Result<SmallDisk, String> {
        let fs = LoopFs::make(base, bytes)?;
        Ok(SmallDisk {
            mount: fs.mount.clone(),
            ballast: fs.mount.join("ballast"),
            _fs: fs,
        })
    }

    /// Fills the file system with a ballast file until writes fail with ENOSPC.
    pub fn fill(&self) -> Result<u64, String> {
        let mut f = std::fs::File::create(&self.ballast).map_err(|e| e.to_string())?;
        let chunk = vec![0x5au8; 1 << 16];
        let mut written = 0u64;
        // Bounded: the image is small; stop at the first error (ENOSPC) or 4 GiB.
        while written < 4 << 30 {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.sync_all();
        Ok(written)
    }

    /// Removes the ballast: the space is free again.
    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.ballast);
    }
}

/// One node process.
pub struct Node {
    pub id: usize,
    pub dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    ns: String,
    pub addr: String,
    child: Option<Child>,
    pub stopped: bool,
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_shardlog"))
            .args(["serve", "--cores", "1", "--data-dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shardlog in its namespace");
        self.child = Some(child);
        self.stopped = false;
    }

    /// True while the process runs (stopped or not).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True when the process ended without being killed by the harness (a crash).
    pub fn child_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => false,
        }
    }

    fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.stopped = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.stopped = false;
    }

    /// The bootstrap address of this node.
    pub fn bootstrap(&self) -> String {
        format!("{}:{CLIENT_PORT}", self.addr)
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.stopped {
            self.resume();
        }
        self.kill9();
    }
}

/// How a [`Cluster`] is laid out.
pub struct ClusterSpec {
    pub nodes: usize,
    /// The first `controllers` nodes are combined broker+controller nodes.
    pub controllers: usize,
    /// A node whose data dir is a small loop-mounted file system, and its size.
    pub small_disk: Option<(usize, u64)>,
    /// Extra `KEY=VALUE` properties of every node.
    pub extra: Vec<String>,
}

/// N node processes in their namespaces.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub net: Net,
    pub disk: Option<(usize, SmallDisk)>,
    pub base: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Formats and starts the nodes; returns once each answers ApiVersions (at most 90 s).
    pub fn start(spec: &ClusterSpec) -> Result<Cluster, String> {
        let net = Net::create(spec.nodes)?;
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("chaos-{}-", std::process::id()))
            .tempdir_in(base)
            .map_err(|e| e.to_string())?;
        let base = tmp.path().to_path_buf();
        let disk = match spec.small_disk {
            Some((node, bytes)) => Some((node, SmallDisk::make(&base, bytes)?)),
            None => None,
        };
        let voters: Vec<String> = (1..=spec.controllers)
            .map(|i| format!("{i}@{}:{CONTROLLER_PORT}", net.addr(i)))
            .collect();
        let voters = voters.join(",");
        let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .arg("random-uuid")
            .output()
            .map_err(|e| e.to_string())?;
        let cluster_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut nodes = Vec::new();
        for i in 1..=spec.nodes {
            let dir = match &disk {
                Some((n, d)) if *n == i => d.mount.join("data"),
                _ => base.join(format!("node{i}")),
            };
            run(Command::new(env!("CARGO_BIN_EXE_shardlog"))
                .args(["format", "-t", &cluster_id, "--data-dir"])
                .arg(&dir)
                .args(["--set", &format!("node.id={i}")]))?;
            let addr = net.addr(i);
            let (roles, listeners) = if i <= spec.controllers {
                (
                    "broker,controller",
                    format!(
                        "PLAINTEXT://{addr}:{CLIENT_PORT},CONTROLLER://{addr}:{CONTROLLER_PORT}"
                    ),
                )
            } else {
                ("broker", format!("PLAINTEXT://{addr}:{CLIENT_PORT}"))
            };
            let mut props = vec![
                format!("process.roles={roles}"),
                format!("node.id={i}"),
                format!("controller.quorum.voters={voters}"),
                format!("listeners={listeners}"),
            ];
            props.extend(spec.extra.iter().cloned());
            let args = props
                .into_iter()
                .flat_map(|kv| ["--set".to_string(), kv])
                .collect();
            nodes.push(Node {
                id: i,
                dir,
                log: base.join(format!("node{i}.log")),
                args,
                ns: net.ns(i),
                addr,
                child: None,
                stopped: false,
            });
        }
        for n in nodes.iter_mut() {
            n.spawn();
        }
        let mut c = Cluster {
            nodes,
            net,
            disk,
            base,
            _tmp: Some(tmp),
        };
        for i in 1..=spec.nodes {
            c.wait_ready(i, Duration::from_secs(90))?;
        }
        Ok(c)
    }

    /// Keeps the data dirs and logs after the test (for a failure's post-mortem).
    pub fn keep_files(&mut self) -> PathBuf {
        if let Some(t) = self._tmp.take() {
            return t.keep();
        }
        self.base.clone()
    }

    /// The bootstrap string of every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(Node::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` (1-based).
    pub fn node(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    /// Starts node `i` again (after a kill -9) and waits until it answers; returns how many
    /// of its registrations the active controller refused meanwhile (a restart within the
    /// killed process's session is refused with DUPLICATE_BROKER_REGISTRATION until that
    /// session runs out; the broker retries, as Kafka's does) and how long it took.
    pub fn restart(&mut self, i: usize, within: Duration) -> Result<(usize, Duration), String> {
        let started = Instant::now();
        let n = self.node(i);
        assert!(n.child.is_none(), "node {i} still runs");
        let before = std::fs::metadata(&n.log).map_or(0, |m| m.len() as usize);
        n.spawn();
        self.wait_ready(i, within)?;
        let log = std::fs::read(&self.node(i).log).unwrap_or_default();
        let since = String::from_utf8_lossy(&log[before.min(log.len())..]).into_owned();
        let refused = since
            .lines()
            .filter(|l| l.contains("unable to register"))
            .count();
        Ok((refused, started.elapsed()))
    }

    /// Waits until node `i` answers ApiVersions on its client port.
    pub fn wait_ready(&mut self, i: usize, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let n = self.node(i);
            if !n.running() {
                return Err(format!("node {i} exited:\n{}", n.log_tail(30)));
            }
            if answers_api_versions(&n.bootstrap()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "node {i} did not answer in {within:?}:\n{}",
            self.node(i).log_tail(30)
        ))
    }

    /// The tails of every node's log.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// True when `addr` answers an ApiVersions v0 request within 2 s.
pub fn answers_api_versions(addr: &str) -> bool {
    let Ok(sock) = addr.parse() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut req = vec![0, 18, 0, 0, 0, 0, 0, 1, 0, 5];
    req.extend_from_slice(b"ready");
    matches!(crate::common::roundtrip(&mut s, &req), Ok(frame) if frame.len() >= 6 && frame[..4] == [0, 0, 0, 1])
}

/// The active controller as DescribeCluster on `addr` reports it (`None`: no answer; -1: none).
pub fn controller_id(addr: &str) -> Option<i32> {
    use kafka_protocol::messages::{
        ApiKey, DescribeClusterRequest, DescribeClusterResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    let key = ApiKey::DescribeCluster;
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(0)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("chaos")))
        .encode(&mut buf, key.request_header_version(0))
        .ok()?;
    DescribeClusterRequest::default().encode(&mut buf, 0).ok()?;
    let frame = crate::common::roundtrip(&mut s, &buf).ok()?;
    let mut b = bytes::Bytes::from(frame);
    ResponseHeader::decode(&mut b, key.response_header_version(0)).ok()?;
    let r = DescribeClusterResponse::decode(&mut b, 0).ok()?;
    Some(r.controller_id.0)
}
