//! Shared by the ops tests: the built binary, the repository root, the pinned Python tools.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (where Cargo.toml is).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `shardlog` binary cargo built for this test run.
pub fn shardlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
}

/// The Python of `.venv`, with the pinned tools of tests/tools/requirements.txt installed
/// (by scripts/install-test-tools, which is idempotent). `None` only when the environment
/// sets SHARDLOG_SKIP_PY_TESTS=1; a failed install fails the test.
pub fn venv_python() -> Option<PathBuf> {
    if std::env::var_os("SHARDLOG_SKIP_PY_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: SHARDLOG_SKIP_PY_TESTS=1, not running the Python-based check");
        return None;
    }
    let status = Command::new(repo().join("scripts/install-test-tools"))
        .current_dir(repo())
        .status()
        .expect("run scripts/install-test-tools");
    assert!(
        status.success(),
        "scripts/install-test-tools failed ({status}); set SHARDLOG_SKIP_PY_TESTS=1 to skip"
    );
    Some(repo().join(".venv/bin/python"))
}
