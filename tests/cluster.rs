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
