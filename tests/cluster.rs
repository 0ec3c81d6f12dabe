//! The cluster's identity at start (issue 17): bad cluster settings and a data dir of another
//! node or cluster are refused with a clear message before anything is written.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn shardlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .expect("run shardlog")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn invalid_voters_are_refused_naming_the_value_and_nothing_is_written() {
    let tmp = common::temp_data_dir();
    let dir = tmp.path().join("node");
    let dir_s = dir.to_str().expect("utf-8 path");
    for (voters, expect) in [
        (
            "1@127.0.0.1:9093,1@127.0.0.1:9094",
            "voter id 1 is listed twice",
        ),
        ("1@127.0.0.1", "1@127.0.0.1"),
        ("one@127.0.0.1:9093", "bad id"),
    ] {
        let o = shardlog(&[
            "serve",
            "--data-dir",
            dir_s,
            "--set",
            "process.roles=broker,controller",
            "--set",
            "node.id=1",
            "--set",
            &format!("controller.quorum.voters={voters}"),
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("controller.quorum.voters") && err.contains(expect),
            "{voters}: {err}"
        );
        assert!(!dir.exists(), "nothing may be written for {voters}");
    }
}

#[test]
fn data_dir_of_another_node_or_cluster_is_refused() {
    let tmp = common::temp_data_dir();
    let dir = tmp.path().join("node2");
    let dir_s = dir.to_str().expect("utf-8 path");
    let id = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
    let id = id.trim();
    assert_eq!(id.len(), 22, "{id}");
    let o = shardlog(&[
        "format",
        "-t",
        id,
        "--data-dir",
        dir_s,
        "--set",
        "node.id=2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = files_under(&dir);
    assert_eq!(before, vec!["meta.properties".to_string()]);

    // Started as node 3 on node 2's dir: refused before anything is written.
    let o = shardlog(&[
        "serve",
        "--data-dir",
        dir_s,
        "--cores",
        "1",
        "--set",
        "node.id=3",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("belongs to node.id 2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files_under(&dir), before);

    // Formatting it again for another cluster is refused too, even with --ignore-formatted.
    let other = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
    let o = shardlog(&[
        "format",
        "-t",
        other.trim(),
        "--data-dir",
        dir_s,
        "--set",
        "node.id=2",
        "--ignore-formatted",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("belongs to cluster"), "{}", stderr(&o));
    let o = shardlog(&["format", "-t", "not-a-uuid", "--data-dir", dir_s]);
    assert!(stderr(&o).contains("bad cluster id"), "{}", stderr(&o));
}

#[test]
fn an_unformatted_cluster_node_is_told_to_format() {
    let tmp = common::temp_data_dir();
    let dir = tmp.path().join("node1");
    let o = shardlog(&[
        "serve",
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--set",
        "process.roles=broker,controller",
        "--set",
        "node.id=1",
        "--set",
        "controller.quorum.voters=1@127.0.0.1:19093",
        "--set",
        "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("shardlog format"), "{}", stderr(&o));
    assert!(!dir.exists());
}

#[test]
fn the_embedded_default_formats_itself_once() {
    let b = common::Broker::start(1, &[]);
    let props = std::fs::read_to_string(b.data_dir.join("meta.properties")).expect("written");
    assert!(
        props.contains("node.id=0") && props.contains("cluster.id="),
        "{props}"
    );
}

/// A controller-only node process (`process.roles=controller`), killed with SIGKILL on drop.
struct Controller {
    child: std::process::Child,
}

impl Controller {
    fn start(dir: &Path, id: i32, port: u16, voters: &str) -> Controller {
        let log = dir.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args([
                "--set",
                "process.roles=controller",
                "--set",
                &format!("node.id={id}"),
                "--set",
                &format!("controller.quorum.voters={voters}"),
                "--set",
                &format!("listeners=CONTROLLER://127.0.0.1:{port}"),
                "--set",
                "broker.session.timeout.ms=1500",
                "--set",
                "controller.quorum.election.timeout.ms=500",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start shardlog");
        Controller { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three controller processes started with Kafka's properties form the metadata quorum; the
/// test registers two brokers through the real broker agent. Topic creation places replicas
/// (and refuses a replication factor above the broker count); kill -9 of the active
/// controller: another takes over and creation keeps working; a silent broker is fenced; the
/// killed controller rejoins with its data (the quorum then needs it: another one is killed).
#[test]
fn three_controller_processes_form_a_quorum_and_survive_kill_9() {
    use shardlog::cluster::agent::{AgentConfig, BrokerAgent, ControllerClient};
    use shardlog::cluster::control::TopicRequest;
    use shardlog::cluster::image::Endpoint;
    use shardlog::error_code::ErrorCode;
    use std::time::Duration;

    let tmp = common::temp_data_dir();
    let id = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
    let id = id.trim().to_string();
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let voters = (1..=3)
        .map(|i| format!("{i}@127.0.0.1:{}", ports[i - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<_> = (1..=3).map(|i| tmp.path().join(format!("c{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let o = shardlog(&[
            "format",
            "-t",
            &id,
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--set",
            &format!("node.id={}", i + 1),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut nodes: Vec<Controller> = (0..3)
        .map(|i| Controller::start(&dirs[i], i as i32 + 1, ports[i], &voters))
        .collect();
    let logs = |dirs: &[std::path::PathBuf]| {
        dirs.iter()
            .map(|d| std::fs::read_to_string(d.with_extension("log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let controllers: std::collections::BTreeMap<u64, String> = (1..=3u64)
        .map(|i| (i, format!("127.0.0.1:{}", ports[i as usize - 1])))
        .collect();
    let agent = |broker: i32| {
        BrokerAgent::spawn(
            rt.handle(),
            AgentConfig {
                id: broker,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + broker as u16,
                }],
                rack: None,
                controllers: controllers.clone(),
                cluster_id: id.clone().into(),
                heartbeat_interval_ms: 100,
                initial_registration_timeout_ms: 60_000,
            },
        )
    };
    // The agents run on `rt`, driven while the test blocks on it.
    let block_until = |what: &str, secs: u64, ok: &dyn Fn() -> bool| {
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
            while tokio::time::Instant::now() < deadline {
                if ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }) || panic!("timed out waiting for {what}\n{}", logs(&dirs))
    };
    let b1 = agent(101);
    let b2 = agent(102);
    let live = |a: &BrokerAgent| -> Vec<i32> {
        a.images().borrow().live_brokers().map(|b| b.id).collect()
    };
    block_until("two live brokers", 20, &|| live(&b1) == vec![101, 102]);

    let topic = |name: &str, rf: i16| TopicRequest {
        name: name.into(),
        id: shardlog::meta::new_topic_id(),
        partitions: 2,
        replication_factor: rf,
        assignments: None,
        configs: Default::default(),
    };
    let mut admin = ControllerClient::new(id.clone().into(), &controllers);
    let r = rt
        .block_on(admin.create_topics(vec![
            topic("before", 1),
            topic("wide", 3),
            topic("replicated", 2),
        ]))
        .expect("answered");
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(
        r[1].as_ref().map_err(|e| e.code),
        Err(ErrorCode::INVALID_REPLICATION_FACTOR)
    );
    // Partition data is replicated (issue 18): two brokers hold RF 2.
    assert!(r[2].is_ok(), "{r:?}");

    // kill -9 the active controller: another takes over, creation keeps working.
    let leader = b1.status().borrow().controller.expect("a controller") as usize;
    nodes[leader - 1].kill();
    let mut created = false;
    for _ in 0..5 {
        if let Ok(r) = rt.block_on(admin.create_topics(vec![topic("after", 1)])) {
            assert!(r[0].is_ok(), "{r:?}");
            created = true;
            break;
        }
    }
    assert!(created, "no new controller took over\n{}", logs(&dirs));
    block_until("a new controller known to the broker", 10, &|| {
        b1.status()
            .borrow()
            .controller
            .is_some_and(|c| c as usize != leader)
    });

    // A broker that stops heartbeating is fenced and leaves the live brokers.
    drop(b2);
    block_until("broker 102 fenced", 10, &|| live(&b1) == vec![101]);

    // The killed controller restarts on its data and rejoins: with another one killed, the
    // quorum (2 of 3) needs it to create a topic.
    nodes[leader - 1] =
        Controller::start(&dirs[leader - 1], leader as i32, ports[leader - 1], &voters);
    let current = b1.status().borrow().controller.expect("a controller") as usize;
    let other = (1..=3)
        .find(|i| *i != leader && *i != current)
        .expect("the third");
    // Let the restarted one catch up (the agents keep heartbeating meanwhile).
    rt.block_on(tokio::time::sleep(Duration::from_millis(1500)));
    nodes[other - 1].kill();
    let mut created = false;
    for _ in 0..5 {
        if let Ok(r) = rt.block_on(admin.create_topics(vec![topic("rejoined", 1)])) {
            assert!(r[0].is_ok(), "{r:?}");
            created = true;
            break;
        }
    }
    assert!(
        created,
        "the restarted controller did not rejoin\n{}",
        logs(&dirs)
    );
    block_until("the last topic in the broker's image", 10, &|| {
        b1.images().borrow().topics.contains_key("rejoined")
    });
}

/// The deployment examples are real cluster configurations: each host's file of the 3-host
/// systemd example, and the Kubernetes ConfigMap for every pod ordinal, pass the cluster
/// cross-checks; the ConfigMap's cluster id formats a data dir.
#[test]
fn deploy_cluster_examples_resolve() {
    use shardlog::config::BrokerConfig;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut voters = Vec::new();
    for i in 1..=3 {
        let path = repo.join(format!("deploy/systemd/cluster/host{i}.toml"));
        let mut c = BrokerConfig::default();
        c.load_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let r = c
            .resolve_cluster()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .expect("cluster mode");
        assert_eq!(r.node_id, i);
        assert_eq!(r.controller_listen.map(|a| a.port()), Some(9093));
        assert_eq!(c.listen.port(), 9092);
        assert_eq!(c.advertised(), (format!("sl{i}"), 9092));
        voters.push(r.voters);
    }
    assert!(voters.iter().all(|v| *v == voters[0] && v.len() == 3));

    let yaml = std::fs::read_to_string(repo.join("deploy/kubernetes/configmap.yaml"))
        .expect("read configmap");
    let cluster_id = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster.id: "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("cluster.id in the ConfigMap");
    let toml: String = yaml
        .lines()
        .skip_while(|l| l.trim() != "shardlog.toml: |")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let tmp = common::temp_data_dir();
    let path = tmp.path().join("shardlog.toml");
    std::fs::write(&path, &toml).expect("write");
    for ordinal in 0..3 {
        let mut c = BrokerConfig::default();
        c.load_file(&path).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        c.apply("node.id", &ordinal.to_string()).expect("node.id");
        let r = c
            .resolve_cluster()
            .unwrap_or_else(|e| panic!("pod {ordinal}: {e}"))
            .expect("cluster mode");
        assert_eq!(r.voters.len(), 3);
        assert!(r.voters.iter().any(|v| v.id == ordinal));
    }
    let dir = tmp.path().join("pod0");
    let o = shardlog(&[
        "format",
        "-t",
        &cluster_id,
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--set",
        "node.id=0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A broker whose controllers do not answer waits to join (it does not listen meanwhile), and
/// stops cleanly on SIGTERM.
#[test]
fn a_broker_without_a_quorum_waits_and_stops_cleanly_on_sigterm() {
    let tmp = common::temp_data_dir();
    let dir = tmp.path().join("b7");
    let id = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
    let o = shardlog(&[
        "format",
        "-t",
        id.trim(),
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--set",
        "node.id=7",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (port, dead) = (common::free_port(), common::free_port());
    let log = dir.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["serve", "--cores", "1", "--data-dir"])
        .arg(&dir)
        .args([
            "--set",
            "process.roles=broker",
            "--set",
            "node.id=7",
            "--set",
            &format!("controller.quorum.voters=1@127.0.0.1:{dead}"),
            "--set",
            &format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start shardlog");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "it waits for the quorum"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no listener before it has joined"
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("stopped before joining the cluster"),
        "{text}"
    );
}
