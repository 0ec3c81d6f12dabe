//! The command line refuses bad configuration with a message that names what is wrong.

mod common;

use std::process::Command;

fn serve(args: &[&str]) -> (Option<i32>, String) {
    let dir = common::temp_data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .args(args)
        .output()
        .expect("run shardlog");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let (code, err) = serve(&["--set", "log.segmnt.bytes=5"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("log.segmnt.bytes"), "{err}");

    let (code, err) = serve(&["--set", "num.partitions=zero"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("num.partitions") && err.contains("zero"),
        "{err}"
    );

    let (code, err) = serve(&["--cores", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--cores"), "{err}");

    let dir = common::temp_data_dir();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "log.retention.ms = 1000\nsocket.request.max.bytez = 10\n",
    )
    .expect("write");
    let (code, err) = serve(&["--config", file.to_str().expect("utf8 path")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("socket.request.max.bytez"), "{err}");
}

#[test]
fn corrupt_metadata_snapshot_stops_the_start_with_its_path() {
    let dir = common::temp_data_dir();
    std::fs::create_dir_all(dir.path().join("meta")).expect("mkdir");
    std::fs::write(
        dir.path().join("meta/topics.rkyv"),
        b"SLMETA01garbage-garbage",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", common::free_port()),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run shardlog");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topics.rkyv") && err.contains("corrupt"),
        "{err}"
    );
}
