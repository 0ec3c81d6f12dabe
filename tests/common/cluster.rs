//! Test support for multi-node clusters: node processes formatted for one cluster id, with
//! Kafka's properties (`process.roles`, `controller.quorum.voters`, `listeners`), started,
//! killed with SIGKILL and restarted on their data dirs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node process of a test cluster; SIGKILLed on drop.
pub struct Node {
    pub id: i32,
    pub dir: PathBuf,
    pub port: u16,
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// Where the node's stderr goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension(format!("{}.log", self.id))
    }

    /// Starts the process (cores: 1).
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

    /// The node's log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and wait for the process to be gone.
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

/// Runs `shardlog` with `args` to completion.
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

/// `n` combined broker+controller nodes under `root`, formatted for one new cluster and
/// started, each with `extra` properties too (`key=value`).
pub fn start_combined(root: &Path, n: usize, extra: &[&str]) -> Vec<Node> {
    let id = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
    let cluster_id = id.trim().to_string();
    let ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
    let controller_ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
    let voters = (0..n)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, controller_ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let id = i as i32 + 1;
            let dir = root.join(format!("node{id}"));
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
            Node {
                id,
                port: ports[i],
                args,
                dir,
                child: None,
            }
        })
        .collect();
    for node in &mut nodes {
        node.spawn();
    }
    nodes
}

/// Polls `ok` every 100 ms for at most `secs`; panics naming `what` with the nodes' log tails.
pub fn wait_for(what: &str, secs: u64, nodes: &[Node], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}\n{}", log_tails(nodes));
}

/// The last 40 lines of every node's log, each under a `--- node N ---` line.
pub fn log_tails(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            format!(
                "--- node {} ---\n{}",
                n.id,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
