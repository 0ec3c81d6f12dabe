//! Ctrl-C during a load run stops it cleanly and still writes the partial result. In a test
//! binary of its own: SIGINT goes to the whole process, so no other run may share it.

mod common;

use common::Broker;
use shardlog_tools::hist::RunResult;
use shardlog_tools::load;
use std::time::{Duration, Instant};

#[test]
fn sigint_writes_a_partial_result() {
    let broker = Broker::start(1, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = dir.path().join("w.toml");
    std::fs::write(
        &workload,
        "message_size = 100\nproducer_rate = 1000\nwarmup_secs = 0\nduration_secs = 60\n",
    )
    .expect("write workload");
    let out = dir.path().join("RUN.json");
    let args = common::load_args(broker.bootstrap(), workload, out.clone());
    let interrupter = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(2500));
        // SAFETY: sends SIGINT to this process; run_cli has installed its handler by now.
        unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
    });
    let started = Instant::now();
    let run = load::run_cli(args).unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    interrupter.join().expect("interrupter");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped early");
    assert!(run.interrupted, "marked as partial");
    assert!(run.summary.measured_secs > 1.0 && run.summary.measured_secs < 10.0);
    assert!(run.summary.produced_msgs > 0);
    assert_eq!(
        run.summary.total_consumed_msgs, run.summary.total_acked_msgs,
        "drained"
    );
    let back = RunResult::read(&out).expect("partial RUN.json written");
    assert!(back.interrupted);
}
