//! The client compatibility matrix: the standard Kafka clients, each driven through the same
//! scenarios against the real broker binary (see `tests/clients/README.md`).
//!
//! Every client family has a scenario program under `tests/clients/<family>/`, installed by
//! `scripts/install-clients`. A program is called once per scenario, as
//! `PROGRAM SCENARIO BOOTSTRAP TAG [ARGS...]`, in its own process group with its own timeout;
//! exit 0 is a pass, exit 2 says the client lacks what the scenario needs (the cell reads n/a
//! with the reason), anything else (or the timeout) is a failure. Cross-client: every client
//! first writes the shared format to `xc-<tag>` (`xproduce`), then every client reads what
//! every producer wrote (`xconsume TAG...`).
//!
//! The run writes `tests/clients/RESULTS.md` (the table `scripts/client-matrix-table` puts in
//! README.md) and fails if any cell failed. Environment:
//! - `SHARDLOG_CLIENTS=a,b`: run only these rows (RESULTS.md is then left alone);
//! - `SHARDLOG_SCENARIOS=a,b`: run only these scenarios (likewise);
//! - `SHARDLOG_SKIP_CLIENTS=1`: skip the matrix (for a quick inner loop).

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Broker;

/// The scenarios every client row runs, in table order (xconsume runs last, after every
/// client's xproduce).
const CLIENT_SCENARIOS: &[&str] = &[
    "create_topic",
    "produce_consume",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
    "group",
    "list_offsets",
    "idempotent",
    "max_under",
    "max_over",
    "xproduce",
    "xconsume",
];

/// CLIENT_SCENARIOS plus `sasl_rejected` (a client configured for SASL gets an authentication
/// error at once from a listener without SASL) and `txn` (a transactional producer commits,
/// aborts and commits, read_committed and read_uncommitted consumers see what Kafka's would,
/// and a second producer with the same transactional id fences the first): written for
/// librdkafka and the Java client.
const CLIENT_SCENARIOS_SASL: &[&str] = &[
    "create_topic",
    "produce_consume",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
    "group",
    "list_offsets",
    "idempotent",
    "max_under",
    "max_over",
    "sasl_rejected",
    "txn",
    "xproduce",
    "xconsume",
];

/// CLIENT_SCENARIOS_SASL plus `txn_ctp` (a consume-transform-produce loop with its offsets
/// in its transactions, killed with SIGKILL mid-transaction and restarted: every output
/// exactly once), for librdkafka (confluent-kafka).
const CLIENT_SCENARIOS_SASL_CTP: &[&str] = &[
    "create_topic",
    "produce_consume",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
    "group",
    "list_offsets",
    "idempotent",
    "max_under",
    "max_over",
    "sasl_rejected",
    "txn",
    "txn_ctp",
    "xproduce",
    "xconsume",
];

/// CLIENT_SCENARIOS plus `txn_ctp`, for franz-go.
const CLIENT_SCENARIOS_CTP: &[&str] = &[
    "create_topic",
    "produce_consume",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
    "group",
    "list_offsets",
    "idempotent",
    "max_under",
    "max_over",
    "txn_ctp",
    "xproduce",
    "xconsume",
];

/// Kafka's command-line tools (kafka-tools), a row of their own.
const TOOLS_SCENARIOS: &[&str] = &[
    "tools_topic",
    "tools_console",
    "tools_groups",
    "tools_transactions",
];

/// The broker's `message.max.bytes` in this run; the programs know it too (max_under/max_over).
const MESSAGE_MAX_BYTES: usize = 65536;

/// How many scenario programs run at once (the machine has 2 cores).
const PARALLEL_ROWS: usize = 3;

/// One row of the matrix.
struct Row {
    /// The row's name in the table, also the tag in its topic names.
    name: &'static str,
    /// The language or form of the client.
    family: &'static str,
    /// The program and its fixed leading arguments, relative to the repo root.
    program: Vec<String>,
    /// A file that exists once `scripts/install-clients` installed the row.
    installed: &'static str,
    scenarios: &'static [&'static str],
    /// Per-scenario time limit.
    timeout: Duration,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rows() -> Vec<Row> {
    let py = "tests/clients/python/.venv/bin/python".to_string();
    let java_cp = "tests/clients/java/target/shardlog-clients.jar:tests/clients/java/target/lib/*";
    let java = |_: ()| {
        vec![
            "java".to_string(),
            "-XX:TieredStopAtLevel=1".into(),
            "-Xshare:auto".into(),
            "-cp".into(),
            java_cp.into(),
            "dev.shardlog.clients.Main".into(),
        ]
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Row {
            name: "confluent-kafka",
            family: "Python (librdkafka)",
            program: vec![
                py.clone(),
                "tests/clients/python/confluent_scenarios.py".into(),
            ],
            installed: "tests/clients/python/.venv/bin/python",
            scenarios: CLIENT_SCENARIOS_SASL_CTP,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "kafka-python",
            family: "Python",
            program: vec![
                py.clone(),
                "tests/clients/python/kafka_python_scenarios.py".into(),
            ],
            installed: "tests/clients/python/.venv/bin/python",
            scenarios: CLIENT_SCENARIOS,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "aiokafka",
            family: "Python (asyncio)",
            program: vec![py, "tests/clients/python/aiokafka_scenarios.py".into()],
            installed: "tests/clients/python/.venv/bin/python",
            scenarios: CLIENT_SCENARIOS,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "kafka-clients",
            family: "Java",
            program: java(()),
            installed: "tests/clients/java/target/shardlog-clients.jar",
            scenarios: CLIENT_SCENARIOS_SASL,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "kafka-tools",
            family: "Java CLI",
            program: java(()),
            installed: "tests/clients/java/target/shardlog-clients.jar",
            scenarios: TOOLS_SCENARIOS,
            timeout: Duration::from_secs(120),
        },
        Row {
            name: "franz-go",
            family: "Go",
            program: s(&["tests/clients/go/bin/franz"]),
            installed: "tests/clients/go/bin/franz",
            scenarios: CLIENT_SCENARIOS_CTP,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "sarama",
            family: "Go",
            program: s(&["tests/clients/go/bin/sarama"]),
            installed: "tests/clients/go/bin/sarama",
            scenarios: CLIENT_SCENARIOS,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "kafkajs",
            family: "Node.js",
            program: s(&["node", "tests/clients/node/kafkajs_scenarios.js"]),
            installed: "tests/clients/node/node_modules/kafkajs/package.json",
            scenarios: CLIENT_SCENARIOS,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "confluent-kafka-javascript",
            family: "Node.js (librdkafka)",
            program: s(&["node", "tests/clients/node/confluent_scenarios.js"]),
            installed: "tests/clients/node/node_modules/@confluentinc/kafka-javascript/build/Release/confluent-kafka-javascript.node",
            scenarios: CLIENT_SCENARIOS,
            timeout: Duration::from_secs(60),
        },
        Row {
            name: "kcat",
            family: "CLI (librdkafka)",
            program: s(&["bash", "tests/clients/kcat/scenarios.sh"]),
            installed: "/usr/bin/kcat",
            scenarios: CLIENT_SCENARIOS,
            timeout: Duration::from_secs(60),
        },
    ]
}

#[derive(Clone, Debug)]
enum Cell {
    Pass,
    /// The client lacks what the scenario needs; the reason.
    Unsupported(String),
    /// Failed, timed out or could not start; what it printed last.
    Fail(String),
}

/// What a program run ended with.
struct Outcome {
    code: Option<i32>,
    timed_out: bool,
    output: String,
}

/// Runs `program args` in its own process group, killing the whole group at `timeout`.
fn run(program: &[String], args: &[String], timeout: Duration) -> Outcome {
    let out = tempfile::NamedTempFile::new().expect("temp output file");
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..])
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        // One open file for both streams (a dup shares the offset: no overwriting).
        .stdout(out.as_file().try_clone().expect("dup"))
        .stderr(out.as_file().try_clone().expect("dup"))
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                code: None,
                timed_out: false,
                output: format!("cannot start {}: {e}", program[0]),
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let (code, timed_out) = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break (status.code(), false);
        }
        if Instant::now() > deadline {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Stragglers of the group (a tool's sub-JVM): gone with the scenario.
    // SAFETY: as above; the group id is our child's pid, which we have reaped.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    Outcome {
        code,
        timed_out,
        output,
    }
}

/// The last `n` lines of `s`, each cut to 300 characters.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn scenario(row: &Row, name: &str, bootstrap: &str, extra: &[String]) -> (Cell, Duration) {
    let started = Instant::now();
    // A broker that died (or was stopped from outside) fails the rest at once, not by timeouts.
    if std::net::TcpStream::connect(bootstrap).is_err() {
        return (
            Cell::Fail("the broker is not listening any more (see its log)".into()),
            Duration::ZERO,
        );
    }
    let mut args = vec![
        name.to_string(),
        bootstrap.to_string(),
        row.name.to_string(),
    ];
    args.extend_from_slice(extra);
    let o = run(&row.program, &args, row.timeout);
    let cell = match (o.code, o.timed_out) {
        (_, true) => Cell::Fail(format!(
            "timed out after {} s: {}",
            row.timeout.as_secs(),
            tail(&o.output, 5)
        )),
        (Some(0), _) => Cell::Pass,
        (Some(2), _) => Cell::Unsupported(o.output.lines().next().unwrap_or("").to_string()),
        (code, _) => Cell::Fail(format!("exit {code:?}: {}", tail(&o.output, 8))),
    };
    (cell, started.elapsed())
}

type Results = Arc<Mutex<BTreeMap<(usize, String), (Cell, Duration)>>>;

/// Runs `job(row index)` for every row, PARALLEL_ROWS at a time.
fn for_rows(n: usize, job: impl Fn(usize) + Sync) {
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_ROWS {
            s.spawn(|| loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    let i = *g;
                    *g += 1;
                    i
                };
                if i >= n {
                    break;
                }
                job(i);
            });
        }
    });
}

#[test]
fn client_compatibility_matrix() {
    if std::env::var_os("SHARDLOG_SKIP_CLIENTS").is_some() {
        eprintln!("SHARDLOG_SKIP_CLIENTS is set: the client matrix is skipped");
        return;
    }
    let only: Option<Vec<String>> = std::env::var("SHARDLOG_CLIENTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|r| only.as_ref().is_none_or(|o| o.iter().any(|n| n == r.name)))
        .collect();
    assert!(!rows.is_empty(), "SHARDLOG_CLIENTS names no row");
    let scenarios_only: Option<Vec<String>> = std::env::var("SHARDLOG_SCENARIOS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());

    let max = format!("message.max.bytes={MESSAGE_MAX_BYTES}");
    // The coordinator narrates every Join/Sync/Heartbeat/Leave at debug: a failing group cell
    // then shows its group's history (below). This test is the only one in its process.
    std::env::set_var("RUST_LOG", "info,openraft=warn,shardlog::group=debug");
    let broker = Broker::start(
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "log.preallocate.bytes=1048576",
            &max,
        ],
    );
    let bootstrap = broker.bootstrap();
    let results: Results = Arc::default();
    let versions: Mutex<BTreeMap<usize, String>> = Mutex::default();
    let installed = |r: &Row| {
        let p = Path::new(r.installed);
        if p.is_absolute() {
            p.exists()
        } else {
            root().join(p).exists()
        }
    };

    // Phase 1: every scenario but xconsume.
    for_rows(rows.len(), |i| {
        let row = &rows[i];
        let record = |name: &str, cell: (Cell, Duration)| {
            eprintln!(
                "[{}] {name}: {:?} ({:.1} s)",
                row.name,
                cell.0,
                cell.1.as_secs_f64()
            );
            results.lock().unwrap().insert((i, name.to_string()), cell);
        };
        if !installed(row) {
            for name in row.scenarios {
                let why = format!(
                    "not installed ({} missing): run scripts/install-clients",
                    row.installed
                );
                record(name, (Cell::Fail(why), Duration::ZERO));
            }
            return;
        }
        let v = run(
            &row.program,
            &["version".to_string()],
            Duration::from_secs(60),
        );
        let version = if v.code == Some(0) {
            v.output.lines().last().unwrap_or("?").trim().to_string()
        } else {
            format!("? ({})", tail(&v.output, 1))
        };
        versions.lock().unwrap().insert(i, version);
        let wanted = |s: &str| {
            scenarios_only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == s))
        };
        for name in row
            .scenarios
            .iter()
            .filter(|s| **s != "xconsume" && wanted(s))
        {
            record(name, scenario(row, name, &bootstrap, &[]));
        }
    });

    // Phase 2: each client reads what every client that passed xproduce wrote.
    let producers: Vec<String> = {
        let res = results.lock().unwrap();
        rows.iter()
            .enumerate()
            .filter(|(i, _)| {
                matches!(
                    res.get(&(*i, "xproduce".to_string())),
                    Some((Cell::Pass, _))
                )
            })
            .map(|(_, r)| r.name.to_string())
            .collect()
    };
    for_rows(rows.len(), |i| {
        let row = &rows[i];
        let skipped = scenarios_only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == "xconsume"));
        if skipped || !row.scenarios.contains(&"xconsume") || !installed(row) {
            return;
        }
        let cell = if producers.is_empty() {
            (
                Cell::Fail("no client produced the cross-client topics".into()),
                Duration::ZERO,
            )
        } else {
            scenario(row, "xconsume", &bootstrap, &producers)
        };
        eprintln!(
            "[{}] xconsume: {:?} ({:.1} s)",
            row.name,
            cell.0,
            cell.1.as_secs_f64()
        );
        results
            .lock()
            .unwrap()
            .insert((i, "xconsume".to_string()), cell);
    });

    let results = results.lock().unwrap().clone();
    let versions = versions.into_inner().unwrap();
    let table = render(&rows, &versions, &results, &producers);
    if only.is_none() && scenarios_only.is_none() {
        std::fs::write(root().join("tests/clients/RESULTS.md"), &table).expect("write RESULTS.md");
    }
    eprintln!("{table}");
    let failed: Vec<String> = results
        .iter()
        .filter_map(|((i, name), (cell, _))| match cell {
            Cell::Fail(why) => Some(format!("{} / {name}: {why}", rows[*i].name)),
            _ => None,
        })
        .collect();
    // Each client's scenarios use the group `g-<client>`: its coordinator events, for the
    // failing rows.
    let log = broker.log();
    let groups: String = results
        .iter()
        .filter(|(_, (cell, _))| matches!(cell, Cell::Fail(_)))
        .map(|((i, _), _)| format!("g-{}", rows[*i].name))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|g| {
            let quoted = format!("group={g} ");
            let lines: Vec<String> = log
                .lines()
                .map(strip_ansi)
                .filter(|l| l.contains(&quoted))
                .collect();
            format!(
                "--- {g}: {} coordinator events, the last 40 ---\n{}",
                lines.len(),
                tail(&lines.join("\n"), 40)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        failed.is_empty(),
        "{} failing cells:\n{}\nbroker log tail:\n{}\n{groups}",
        failed.len(),
        failed.join("\n"),
        tail(&log, 20)
    );
}

/// `line` without terminal colour sequences (`ESC [ ... m`), as the broker writes its log.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The Markdown of RESULTS.md: the table, then a note per cell that did not pass.
fn render(
    rows: &[Row],
    versions: &BTreeMap<usize, String>,
    results: &BTreeMap<(usize, String), (Cell, Duration)>,
    producers: &[String],
) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for r in rows {
        for s in r.scenarios {
            if !columns.contains(s) {
                columns.push(s);
            }
        }
    }
    let mut out = String::new();
    out.push_str(
        "<!-- Written by `cargo test --test clients` (tests/clients.rs); \
         `scripts/client-matrix-table` copies it into README.md. -->\n",
    );
    out.push_str(&format!(
        "Broker: 2 shards, `message.max.bytes={MESSAGE_MAX_BYTES}`. \
         pass = passed; **FAIL** = failed (note below); n/a = the client lacks it (note below); \
         blank = not a scenario of that row.\n\n"
    ));
    out.push_str("| client | language | version |");
    for c in &columns {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---|".repeat(columns.len()));
    out.push('\n');
    let mut notes = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let version = versions.get(&i).map_or("not installed", |v| v.as_str());
        out.push_str(&format!("| {} | {} | {} |", r.name, r.family, version));
        for c in &columns {
            let cell = match results.get(&(i, c.to_string())) {
                None => "".to_string(),
                Some((Cell::Pass, _)) => "pass".to_string(),
                Some((Cell::Unsupported(why), _)) => {
                    notes.push(format!("- {} / {c}: n/a: {why}", r.name));
                    format!("n/a[^{}]", notes.len())
                }
                Some((Cell::Fail(why), _)) => {
                    let first = why
                        .lines()
                        .rev()
                        .find(|l| l.contains("FAIL"))
                        .unwrap_or_else(|| why.lines().next().unwrap_or(""));
                    notes.push(format!("- {} / {c}: {}", r.name, first.replace('|', "\\|")));
                    format!("**FAIL**[^{}]", notes.len())
                }
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\nxconsume reads the topics written by: {}.\n",
        if producers.is_empty() {
            "none".to_string()
        } else {
            producers.join(", ")
        }
    ));
    if !notes.is_empty() {
        out.push('\n');
        for (n, note) in notes.iter().enumerate() {
            out.push_str(&format!(
                "[^{}]: {}\n",
                n + 1,
                note.trim_start_matches("- ")
            ));
        }
    }
    out
}
