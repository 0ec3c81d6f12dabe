//! A local cluster of real broker processes for tests: `n` combined broker+controller nodes
//! on free loopback ports, formatted for one fresh cluster id, with short heartbeat and
//! session times so fencing and failover happen within seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node process of a test cluster; SIGKILLed on drop.
pub struct Node {
    /// `node.id`.
    pub id: i32,
    /// Its data dir; its log is next to it (`<dir>.<id>.log`).
    pub dir: PathBuf,
    /// Its PLAINTEXT port.
    pub port: u16,
    /// `serve` arguments after the data dir.
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// A node not started yet ([`Node::spawn`]).
    pub fn new(id: i32, dir: PathBuf, port: u16, args: Vec<String>) -> Node {
        Node {
            id,
            dir,
            port,
            args,
            child: None,
        }
    }

    /// Where its stderr goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension(format!("{}.log", self.id))
    }

    /// Starts the process (appending to its log).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["serve", "--cores", "1", "--data-dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shardlog");
        self.child = Some(child);
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM; the exit code once it has stopped (at most `secs`, then SIGKILL and `None`).
    pub fn terminate(&mut self, secs: u64) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the `shardlog` binary with `args`.
pub fn shardlog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .expect("run shardlog")
}

/// Formats `dir` for `cluster_id` as `node.id` `id`.
pub fn format(dir: &Path, cluster_id: &str, id: i32) {
    let o = shardlog(&[
        "format",
        "-t",
        cluster_id,
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--set",
        &format!("node.id={id}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A running test cluster; its nodes are SIGKILLed and its directory removed on drop.
pub struct Cluster {
    /// Node `i` has `node.id` `i + 1`.
    pub nodes: Vec<Node>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` combined broker+controller nodes (all voters) with `extra` properties
    /// (`KEY=VALUE`) besides the cluster's own; does not wait for them.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let tmp = super::temp_data_dir();
        let id = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
        let cluster_id = id.trim().to_string();
        let ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
        let controller_ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
        let voters = (0..n)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, controller_ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..n)
            .map(|i| {
                let id = i as i32 + 1;
                let dir = tmp.path().join(format!("node{id}"));
                format(&dir, &cluster_id, id);
                let props = [
                    "process.roles=broker,controller".to_string(),
                    format!("node.id={id}"),
                    format!("controller.quorum.voters={voters}"),
                    format!(
                        "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                        ports[i], controller_ports[i]
                    ),
                    "broker.heartbeat.interval.ms=200".into(),
                    "broker.session.timeout.ms=2000".into(),
                    "controller.quorum.election.timeout.ms=500".into(),
                ];
                let args = props
                    .into_iter()
                    .chain(extra.iter().map(|s| s.to_string()))
                    .flat_map(|kv| ["--set".to_string(), kv])
                    .collect();
                Node::new(id, dir, ports[i], args)
            })
            .collect();
        let mut c = Cluster { nodes, _tmp: tmp };
        for n in &mut c.nodes {
            n.spawn();
        }
        c
    }

    /// The node with `node.id` `id`.
    pub fn node(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// [`wait_for`] on this cluster's nodes.
    pub fn wait_for(&self, what: &str, secs: u64, ok: impl FnMut() -> bool) {
        wait_for(what, secs, &self.nodes, ok)
    }
}

/// Polls `ok` every 100 ms for at most `secs`; panics naming `what` with the tail of every
/// node's log.
pub fn wait_for(what: &str, secs: u64, nodes: &[Node], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            format!(
                "--- node {} ---\n{}",
                n.id,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n"));
}

/// `(leader, leader epoch)` of `topic`/`partition` in a Metadata v12 answer from the broker
/// on `port`; `None` when it does not answer or does not know the partition.
pub fn leader_and_epoch(port: u16, topic: &str, partition: i32) -> Option<(i32, i32)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let mut body = super::request(&mut s, ApiKey::Metadata, 12, &req);
    let r = MetadataResponse::decode(&mut body, 12).ok()?;
    let t = r.topics.first()?;
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)?;
    (p.error_code == 0 || p.error_code == 5).then_some((p.leader_id.0, p.leader_epoch))
}
