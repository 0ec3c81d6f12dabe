//! `shardlog tune --check` runs (unprivileged too), prints the table and changes nothing.

mod ops_support;

use std::path::Path;
use std::process::{Command, Output};

const SETTINGS: [&str; 12] = [
    "kernel",
    "io_uring",
    "memlock limit (RLIMIT_MEMLOCK)",
    "open files (RLIMIT_NOFILE)",
    "fs.aio-max-nr",
    "I/O scheduler of the data disk",
    "file system of the data dir",
    "O_DIRECT in the data dir",
    "CPU frequency governor",
    "net.core.somaxconn",
    "transparent huge pages",
    "NIC IRQ affinity",
];

/// Files `tune` may write when applying; `--check` must leave them as they were.
const WATCHED: [&str; 4] = [
    "/proc/sys/net/core/somaxconn",
    "/proc/sys/fs/aio-max-nr",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
];

fn watched() -> Vec<Option<String>> {
    WATCHED
        .iter()
        .map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("run shardlog tune");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

/// Reads the table by the header's column offsets; returns (setting, now, rec, status, why).
fn rows(stdout: &str) -> Vec<[String; 5]> {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("SETTING"))
        .unwrap_or_else(|| panic!("no header in\n{stdout}"));
    let cols = ["SETTING", "NOW", "RECOMMENDED", "STATUS", "WHY"]
        .map(|c| header.find(c).unwrap_or_else(|| panic!("no column {c}")));
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("SETTING"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let cell = |i: usize| {
                let end = cols.get(i + 1).copied().unwrap_or(l.len()).min(l.len());
                l.get(cols[i]..end).unwrap_or("").trim().to_string()
            };
            [cell(0), cell(1), cell(2), cell(3), cell(4)]
        })
        .collect()
}

fn check_table(stdout: &str) {
    let rows = rows(stdout);
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, SETTINGS, "{stdout}");
    for r in &rows {
        assert!(!r[1].is_empty(), "empty NOW in {r:?}");
        assert!(!r[2].is_empty(), "empty RECOMMENDED in {r:?}");
        assert!(
            ["ok", "WARN", "BAD", "info", "n/a"].contains(&r[3].as_str()),
            "status {r:?}"
        );
        assert!(r[4].len() > 20, "short WHY in {r:?}");
    }
}

#[test]
fn check_prints_the_table_and_changes_nothing() {
    let data = tempfile::tempdir().expect("tempdir");
    let before = watched();
    let (out, stdout) = run(ops_support::shardlog()
        .args(["tune", "--check", "--cores", "2", "--data-dir"])
        .arg(data.path()));
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("--check: nothing is changed"), "{stdout}");
    check_table(&stdout);
    assert_eq!(watched(), before, "tune --check changed a setting");
    // The data dir exists here, so the O_DIRECT probe ran and left no file behind.
    let o_direct = rows(&stdout)
        .into_iter()
        .find(|r| r[0] == "O_DIRECT in the data dir")
        .expect("row");
    assert!(!o_direct[1].starts_with("n/a"), "{o_direct:?}");
    assert_eq!(std::fs::read_dir(data.path()).expect("ls").count(), 0);
}

#[test]
fn missing_data_dir_is_reported_not_fatal() {
    let data = tempfile::tempdir().expect("tempdir");
    let (out, stdout) = run(ops_support::shardlog()
        .args(["tune", "--check", "--data-dir"])
        .arg(data.path().join("not/yet/created")));
    assert!(out.status.success(), "{out:?}");
    check_table(&stdout);
    assert!(stdout.contains("n/a (data dir missing)"), "{stdout}");
    assert!(!data.path().join("not").exists());
}

/// As an unprivileged user (root drops to `nobody` with setpriv): the table still prints,
/// and without `--check` nothing is applied.
#[test]
fn runs_unprivileged() {
    let bin = env!("CARGO_BIN_EXE_shardlog");
    // Our real uid, from /proc: root when the Uid line's first field is 0.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    let mut cmd = if root {
        if !Path::new("/usr/bin/setpriv").exists() {
            eprintln!("SKIPPED: running as root and setpriv is missing; cannot drop privileges");
            return;
        }
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    let before = watched();
    let (out, stdout) = run(cmd.args(["tune", "--data-dir", "/nonexistent/shardlog"]));
    assert!(out.status.success(), "{out:?}");
    check_table(&stdout);
    assert_eq!(watched(), before);
    if stdout.contains("can be applied") {
        assert!(stdout.contains("not root: nothing applied"), "{stdout}");
    }
}
