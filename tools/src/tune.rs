//! `shardlog tune`: checks the host settings the broker's speed depends on and, run as root
//! without `--check`, applies the ones that are safe to change at run time.
//!
//! Each check reads what it needs from `/proc`, `/sys` or a system call and yields one
//! [`Check`]: the setting, its value now, the recommended value, a status and a short reason.
//! A file that does not exist on this host (no cpufreq in a VM, no `io_uring_disabled` on an
//! older kernel) gives `n/a`, never an error. The reads go through [`Host::root`], so tests
//! run the checks against a fake `/proc` and `/sys` in a temporary directory.
//!
//! Only writes to `/proc/sys` and `/sys` files are ever applied (I/O scheduler, CPU governor,
//! `somaxconn`, `aio-max-nr`, transparent huge pages); they last until reboot. Limits of the
//! service (memlock, open files) belong to its unit file, and the rest (file system, NIC
//! interrupts, io_uring policy) is reported for a person to decide.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bytes of I/O buffers glommio 0.9 registers per executor (its `DEFAULT_IO_MEMORY`).
const GLOMMIO_IO_MEMORY_BYTES: u64 = 10 << 20;
/// glommio 0.9 refuses to start an executor below this memlock limit.
const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 << 10;
/// io_uring rings per glommio executor (main, latency, poll), each registering the buffers.
const GLOMMIO_RINGS_PER_SHARD: u64 = 3;
/// The accept backlog every shard's listener asks for.
const LISTEN_BACKLOG: u64 = 1024;
/// Recommended `net.core.somaxconn` (the kernel default since 5.4).
const SOMAXCONN_RECOMMENDED: u64 = 4096;
/// Recommended `fs.aio-max-nr`.
const AIO_MAX_NR_RECOMMENDED: u64 = 1_048_576;
/// Open-files limit below which a busy broker runs out of descriptors.
const NOFILE_MIN: u64 = 65_536;

/// How a setting compares with the recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// As recommended.
    Ok,
    /// Works, but slower or less robust than recommended.
    Warn,
    /// The broker will fail or lose much of its speed.
    Bad,
    /// Reported for a person to judge; nothing to compare against.
    Info,
    /// The setting does not exist on this host.
    NotAvailable,
}

impl Status {
    /// The word printed in the table.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Bad => "BAD",
            Status::Info => "info",
            Status::NotAvailable => "n/a",
        }
    }
}

/// One file write that brings a setting to its recommended value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysWrite {
    /// A file under `/proc/sys` or `/sys`.
    pub path: PathBuf,
    /// What to write into it.
    pub value: String,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Check {
    /// The setting's name as a person looks it up (`net.core.somaxconn`).
    pub setting: String,
    /// Its value on this host now.
    pub now: String,
    /// What shardlog recommends.
    pub recommended: String,
    /// How `now` compares with `recommended`.
    pub status: Status,
    /// Why it matters, in a sentence.
    pub why: &'static str,
    /// The writes that apply the recommendation, when it can be applied at run time.
    pub fix: Vec<SysWrite>,
}

impl Check {
    fn new(setting: &str, why: &'static str) -> Self {
        Check {
            setting: setting.to_string(),
            now: "n/a".to_string(),
            recommended: String::new(),
            status: Status::NotAvailable,
            why,
            fix: Vec::new(),
        }
    }

    fn set(
        mut self,
        now: impl Into<String>,
        recommended: impl Into<String>,
        status: Status,
    ) -> Self {
        self.now = now.into();
        self.recommended = recommended.into();
        self.status = status;
        self
    }

    /// Whether applying this check's writes would change something: the setting is not as
    /// recommended (`Info` included: e.g. `fs.aio-max-nr`, harmless to raise) and writable.
    pub fn needs_fix(&self) -> bool {
        matches!(self.status, Status::Warn | Status::Bad | Status::Info) && !self.fix.is_empty()
    }
}

/// The host being checked.
#[derive(Clone, Debug)]
pub struct Host {
    /// Where `/proc` and `/sys` are found: `/` on a real host, a temporary dir in tests.
    pub root: PathBuf,
    /// The broker's data directory.
    pub data_dir: PathBuf,
    /// Shards the broker will run (for the memlock need).
    pub shards: usize,
    /// Whether to make live probes of this process's host (system calls, O_DIRECT file):
    /// true on a real host, false in tests with a fake root.
    pub probe: bool,
}

impl Host {
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// Runs every check.
pub fn check_all(host: &Host) -> Vec<Check> {
    vec![
        check_kernel(host),
        check_io_uring(host),
        check_memlock(host),
        check_nofile(host),
        check_aio_max_nr(host),
        check_scheduler(host),
        check_filesystem(host),
        check_o_direct(host),
        check_governor(host),
        check_somaxconn(host),
        check_thp(host),
        check_nic_irqs(host),
    ]
}

/// The checks as an aligned table: setting, now, recommended, status, why.
pub fn render_table(checks: &[Check]) -> String {
    let header = ["SETTING", "NOW", "RECOMMENDED", "STATUS", "WHY"];
    let rows: Vec<[&str; 5]> = checks
        .iter()
        .map(|c| {
            [
                c.setting.as_str(),
                c.now.as_str(),
                c.recommended.as_str(),
                c.status.label(),
                c.why,
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = width[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What happened to one write when applying.
#[derive(Debug)]
pub struct Applied {
    /// The check's setting.
    pub setting: String,
    /// The write attempted.
    pub write: SysWrite,
    /// `Err` with the reason when the kernel refused it.
    pub result: Result<(), String>,
}

/// Applies the writes of every check that is not as recommended. Needs root.
pub fn apply(checks: &[Check]) -> Vec<Applied> {
    let mut done = Vec::new();
    for c in checks.iter().filter(|c| c.needs_fix()) {
        for w in &c.fix {
            let result = std::fs::write(&w.path, &w.value).map_err(|e| e.to_string());
            match &result {
                Ok(()) => {
                    tracing::info!(setting = %c.setting, path = %w.path.display(), value = %w.value, "tune: applied")
                }
                Err(e) => {
                    tracing::warn!(setting = %c.setting, path = %w.path.display(), error = %e, "tune: could not apply")
                }
            }
            done.push(Applied {
                setting: c.setting.clone(),
                write: w.clone(),
                result,
            });
        }
    }
    done
}

/// The `shardlog tune` command: prints the table and, when `check_only` is false and the
/// process is root, applies the safe fixes and prints the table again. Returns the exit code:
/// 0, or 1 when a write was refused.
pub fn run(host: &Host, check_only: bool) -> u8 {
    let checks = check_all(host);
    println!(
        "shardlog tune: data dir {}, {} shard(s){}",
        host.data_dir.display(),
        host.shards,
        if check_only {
            " (--check: nothing is changed)"
        } else {
            ""
        }
    );
    println!();
    print!("{}", render_table(&checks));
    let pending: Vec<&Check> = checks.iter().filter(|c| c.needs_fix()).collect();
    if check_only || pending.is_empty() {
        if !pending.is_empty() {
            println!();
            println!(
                "{} setting(s) can be applied: run `shardlog tune` as root (lasts until reboot).",
                pending.len()
            );
        }
        return 0;
    }
    if !is_root() {
        println!();
        println!(
            "not root: nothing applied; {} setting(s) can be applied by root.",
            pending.len()
        );
        return 0;
    }
    println!();
    let applied = apply(&checks);
    let mut failed = false;
    for a in &applied {
        match &a.result {
            Ok(()) => println!(
                "applied {}: wrote `{}` to {}",
                a.setting,
                a.write.value,
                a.write.path.display()
            ),
            Err(e) => {
                failed = true;
                println!(
                    "FAILED {}: writing `{}` to {}: {e}",
                    a.setting,
                    a.write.value,
                    a.write.path.display()
                );
            }
        }
    }
    println!(
        "(run-time changes: they last until reboot; the systemd unit re-applies them at start)"
    );
    println!();
    print!("{}", render_table(&check_all(host)));
    u8::from(failed)
}

/// Whether this process runs as root (and so may apply).
pub fn is_root() -> bool {
    sys::euid() == 0
}

// ---- the checks -------------------------------------------------------------------------

fn check_kernel(host: &Host) -> Check {
    let c = Check::new(
        "kernel",
        "glommio needs io_uring as in Linux 5.8+; newer kernels cut the cost per I/O",
    );
    match host.read("/proc/sys/kernel/osrelease") {
        Some(release) => match parse_kernel_version(&release) {
            Some(v) if v >= (5, 8) => c.set(release, ">= 5.8", Status::Ok),
            Some(_) => c.set(release, ">= 5.8", Status::Bad),
            None => c.set(release, ">= 5.8", Status::Info),
        },
        None => c.set("n/a", ">= 5.8", Status::NotAvailable),
    }
}

fn check_io_uring(host: &Host) -> Check {
    let c = Check::new(
        "io_uring",
        "every shard's disk and network I/O goes through its io_uring; without it no shard starts",
    );
    let policy = host.read("/proc/sys/kernel/io_uring_disabled");
    let probe = if host.probe {
        Some(sys::io_uring_probe())
    } else {
        None
    };
    let mut now = match policy.as_deref() {
        Some("0") => "io_uring_disabled=0".to_string(),
        Some("1") => "io_uring_disabled=1 (io_uring_group only)".to_string(),
        Some("2") => "io_uring_disabled=2 (off)".to_string(),
        Some(other) => format!("io_uring_disabled={other}"),
        None => String::new(),
    };
    let probe_ok = match &probe {
        Some(Ok(())) => {
            now = join_now(&now, "setup ok");
            Some(true)
        }
        Some(Err(e)) => {
            now = join_now(&now, &format!("setup failed: {e}"));
            Some(false)
        }
        None => None,
    };
    let status = match (policy.as_deref(), probe_ok) {
        (_, Some(false)) | (Some("2"), None) => Status::Bad,
        (Some("1"), None) => Status::Warn,
        (_, Some(true)) | (Some("0"), None) => Status::Ok,
        (_, None) => Status::NotAvailable,
    };
    if now.is_empty() {
        now = "n/a".into();
    }
    c.set(now, "io_uring_disabled=0, setup ok", status)
}

fn join_now(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}; {b}")
    }
}

fn check_memlock(host: &Host) -> Check {
    let c = Check::new(
        "memlock limit (RLIMIT_MEMLOCK)",
        "measured: below 512 KiB no shard starts (MemLockLimit); at 8 MiB glommio's 10 MiB buffer registration fails (ENOMEM) and I/O falls back to unregistered buffers; CAP_IPC_LOCK is exempt",
    );
    if !host.probe {
        return c.set("n/a", "unlimited", Status::NotAvailable);
    }
    let need = host.shards.max(1) as u64 * GLOMMIO_RINGS_PER_SHARD * GLOMMIO_IO_MEMORY_BYTES;
    let recommended = format!("unlimited (>= {})", human_bytes(need));
    match sys::rlimit(sys::Limit::Memlock) {
        Some(limit) => {
            let status = match limit {
                None => Status::Ok,
                Some(l) if l < GLOMMIO_MEMLOCK_MIN_BYTES => Status::Bad,
                Some(l) if l < need => Status::Warn,
                Some(_) => Status::Ok,
            };
            let now = limit.map_or("unlimited".to_string(), human_bytes);
            c.set(format!("{now} (this shell)"), recommended, status)
        }
        None => c.set("n/a", recommended, Status::NotAvailable),
    }
}

fn check_nofile(host: &Host) -> Check {
    let c = Check::new(
        "open files (RLIMIT_NOFILE)",
        "one descriptor per client connection and per segment/index file; at the limit accepts fail with EMFILE",
    );
    if !host.probe {
        return c.set("n/a", format!(">= {NOFILE_MIN}"), Status::NotAvailable);
    }
    match sys::rlimit(sys::Limit::Nofile) {
        Some(limit) => {
            let status = match limit {
                Some(l) if l < NOFILE_MIN => Status::Warn,
                _ => Status::Ok,
            };
            let now = limit.map_or("unlimited".to_string(), |l| l.to_string());
            c.set(
                format!("{now} (this shell)"),
                format!(">= {NOFILE_MIN}"),
                status,
            )
        }
        None => c.set("n/a", format!(">= {NOFILE_MIN}"), Status::NotAvailable),
    }
}

fn check_aio_max_nr(host: &Host) -> Check {
    let c = Check::new(
        "fs.aio-max-nr",
        "Linux AIO events host-wide; shardlog's io_uring does not use them, Seastar-style neighbours (ScyllaDB, Redpanda) do",
    );
    let path = "/proc/sys/fs/aio-max-nr";
    let recommended = format!(">= {AIO_MAX_NR_RECOMMENDED}");
    match host.read(path).and_then(|s| s.parse::<u64>().ok()) {
        Some(n) if n >= AIO_MAX_NR_RECOMMENDED => c.set(n.to_string(), recommended, Status::Ok),
        Some(n) => {
            let mut c = c.set(n.to_string(), recommended, Status::Info);
            c.fix = vec![SysWrite {
                path: host.path(path),
                value: AIO_MAX_NR_RECOMMENDED.to_string(),
            }];
            c
        }
        None => c.set("n/a", recommended, Status::NotAvailable),
    }
}

/// The block device holding `dir` (or its nearest existing ancestor), as `/sys` knows it.
struct Disk {
    name: String,
    sys_dir: PathBuf,
}

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    abs.ancestors().find(|p| p.exists()).map(Path::to_path_buf)
}

fn data_disk(host: &Host) -> Result<Disk, String> {
    use std::os::unix::fs::MetadataExt;
    let dir = nearest_existing(&host.data_dir).ok_or("data dir has no existing ancestor")?;
    let dev = std::fs::metadata(&dir).map_err(|e| e.to_string())?.dev();
    let (major, minor) = split_dev(dev);
    let link = host.path(&format!("/sys/dev/block/{major}:{minor}"));
    let real = match std::fs::canonicalize(&link) {
        Ok(real) => real,
        // btrfs and some others report an anonymous device number: find the device the
        // file system was mounted from instead.
        Err(_) => {
            let mountinfo = host.read("/proc/self/mountinfo").unwrap_or_default();
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            let source = mount_source(&mountinfo, &dir)
                .ok_or_else(|| format!("no block device ({major}:{minor})"))?;
            let name = source
                .strip_prefix("/dev/")
                .filter(|n| !n.contains('/'))
                .ok_or_else(|| format!("no block device (mounted from {source})"))?;
            std::fs::canonicalize(host.path(&format!("/sys/class/block/{name}")))
                .map_err(|_| format!("no block device (mounted from {source})"))?
        }
    };
    // A partition's queue settings live in its disk's directory, one level up.
    let disk_dir = if real.join("partition").exists() {
        real.parent().map(Path::to_path_buf).unwrap_or(real)
    } else {
        real
    };
    let name = disk_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Disk {
        name,
        sys_dir: disk_dir,
    })
}

fn check_scheduler(host: &Host) -> Check {
    let c = Check::new(
        "I/O scheduler of the data disk",
        "NVMe queues in hardware; a kernel scheduler adds CPU per I/O and reorders nothing useful (mq-deadline only for spinning disks)",
    );
    let disk = match data_disk(host) {
        Ok(d) => d,
        Err(e) => {
            return c.set(
                format!("n/a ({e})"),
                "none (NVMe/SSD)",
                Status::NotAvailable,
            )
        }
    };
    let file = disk.sys_dir.join("queue/scheduler");
    let Some(text) = std::fs::read_to_string(&file).ok() else {
        return c.set(
            format!("{}: n/a", disk.name),
            "none (NVMe/SSD)",
            Status::NotAvailable,
        );
    };
    let rotational = std::fs::read_to_string(disk.sys_dir.join("queue/rotational"))
        .is_ok_and(|r| r.trim() == "1");
    let want = if rotational { "mq-deadline" } else { "none" };
    let recommended = if rotational {
        "mq-deadline (spinning disk)"
    } else {
        "none (NVMe/SSD)"
    };
    match parse_bracketed(&text) {
        Some(current) => {
            let status = if current == want {
                Status::Ok
            } else {
                Status::Warn
            };
            let mut c = c.set(format!("{}: {current}", disk.name), recommended, status);
            if text
                .split_whitespace()
                .any(|s| s.trim_matches(['[', ']']) == want)
            {
                c.fix = vec![SysWrite {
                    path: file,
                    value: want.to_string(),
                }];
            }
            c
        }
        // Devices without a scheduler choice (some virtual ones) print just "none".
        None if text.trim() == "none" => {
            c.set(format!("{}: none", disk.name), recommended, Status::Ok)
        }
        None => c.set(
            format!("{}: {}", disk.name, text.trim()),
            recommended,
            Status::Info,
        ),
    }
}

fn check_filesystem(host: &Host) -> Check {
    let c = Check::new(
        "file system of the data dir",
        "XFS and ext4 take aligned O_DIRECT appends well; tmpfs refuses O_DIRECT, overlay/NFS vary",
    );
    if !host.probe {
        return c.set("n/a", "xfs or ext4", Status::NotAvailable);
    }
    let Some(dir) = nearest_existing(&host.data_dir) else {
        return c.set("n/a (no such dir)", "xfs or ext4", Status::NotAvailable);
    };
    match sys::statfs_type(&dir) {
        Ok(magic) => {
            let name = fs_name(magic);
            let status = match name {
                "xfs" | "ext4" => Status::Ok,
                "tmpfs" | "ramfs" => Status::Bad,
                _ => Status::Warn,
            };
            c.set(name, "xfs or ext4", status)
        }
        Err(e) => c.set(format!("n/a ({e})"), "xfs or ext4", Status::NotAvailable),
    }
}

fn check_o_direct(host: &Host) -> Check {
    let c = Check::new(
        "O_DIRECT in the data dir",
        "segments are written with O_DIRECT through glommio's DmaFile; where refused, serve needs --buffered-io",
    );
    if !host.probe {
        return c.set("n/a", "supported", Status::NotAvailable);
    }
    if !host.data_dir.is_dir() {
        return c.set("n/a (data dir missing)", "supported", Status::NotAvailable);
    }
    match sys::o_direct_probe(&host.data_dir) {
        Ok(()) => c.set("supported (4 KiB write ok)", "supported", Status::Ok),
        Err(sys::ProbeError::Create(e)) => c.set(
            format!("n/a (cannot create a file: {e})"),
            "supported",
            Status::NotAvailable,
        ),
        Err(sys::ProbeError::Refused(e)) => {
            c.set(format!("refused: {e}"), "supported", Status::Bad)
        }
    }
}

fn check_governor(host: &Host) -> Check {
    let c = Check::new(
        "CPU frequency governor",
        "powersave/schedutil ramp the clock up after load arrives: latency spikes on shard cores that poll",
    );
    let Ok(entries) = std::fs::read_dir(host.path("/sys/devices/system/cpu")) else {
        return c.set("n/a", "performance", Status::NotAvailable);
    };
    let mut governors = Vec::new();
    let mut fix = Vec::new();
    let mut cpus: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    cpus.sort();
    for cpu in cpus {
        let file = cpu.join("cpufreq/scaling_governor");
        if let Ok(g) = std::fs::read_to_string(&file) {
            let g = g.trim().to_string();
            let available =
                std::fs::read_to_string(cpu.join("cpufreq/scaling_available_governors"))
                    .unwrap_or_default();
            if g != "performance" && available.split_whitespace().any(|a| a == "performance") {
                fix.push(SysWrite {
                    path: file,
                    value: "performance".into(),
                });
            }
            governors.push(g);
        }
    }
    if governors.is_empty() {
        return c.set("n/a (no cpufreq)", "performance", Status::NotAvailable);
    }
    let status = if governors.iter().all(|g| g == "performance") {
        Status::Ok
    } else {
        Status::Warn
    };
    let mut c = c.set(summarize(&governors), "performance", status);
    c.fix = fix;
    c
}

fn check_somaxconn(host: &Host) -> Check {
    let c = Check::new(
        "net.core.somaxconn",
        "caps each listener's accept backlog (shardlog asks 1024 per shard); overflow drops SYNs, clients retry after 1 s",
    );
    let path = "/proc/sys/net/core/somaxconn";
    let recommended = format!(">= {SOMAXCONN_RECOMMENDED}");
    match host.read(path).and_then(|s| s.parse::<u64>().ok()) {
        Some(n) => {
            let status = if n >= SOMAXCONN_RECOMMENDED {
                Status::Ok
            } else if n >= LISTEN_BACKLOG {
                Status::Info
            } else {
                Status::Warn
            };
            let mut c = c.set(n.to_string(), recommended, status);
            c.fix = vec![SysWrite {
                path: host.path(path),
                value: SOMAXCONN_RECOMMENDED.to_string(),
            }];
            c
        }
        None => c.set("n/a", recommended, Status::NotAvailable),
    }
}

fn check_thp(host: &Host) -> Check {
    let c = Check::new(
        "transparent huge pages",
        "with `always`, 2 MiB page faults and khugepaged compaction stall shard threads for milliseconds; shardlog gains nothing from THP",
    );
    let path = "/sys/kernel/mm/transparent_hugepage/enabled";
    let Some(text) = host.read(path) else {
        return c.set("n/a", "madvise or never", Status::NotAvailable);
    };
    match parse_bracketed(&text) {
        Some(mode) => {
            let status = if mode == "always" {
                Status::Warn
            } else {
                Status::Ok
            };
            let mut c = c.set(mode, "madvise or never", status);
            c.fix = vec![SysWrite {
                path: host.path(path),
                value: "madvise".into(),
            }];
            c
        }
        None => c.set(text, "madvise or never", Status::Info),
    }
}

fn check_nic_irqs(host: &Host) -> Check {
    let c = Check::new(
        "NIC IRQ affinity",
        "a NIC interrupt on a shard's core preempts its reactor; with spare cores (--cores < CPUs) steer IRQs there",
    );
    let recommended = "CPUs without shards (report only)";
    let Ok(entries) = std::fs::read_dir(host.path("/sys/class/net")) else {
        return c.set("n/a", recommended, Status::NotAvailable);
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut parts = Vec::new();
    for nic in names {
        let Ok(irqs) =
            std::fs::read_dir(host.path(&format!("/sys/class/net/{nic}/device/msi_irqs")))
        else {
            continue;
        };
        let mut cpus = std::collections::BTreeSet::new();
        let mut count = 0;
        for irq in irqs.filter_map(Result::ok) {
            let irq = irq.file_name().to_string_lossy().into_owned();
            count += 1;
            if let Some(list) = host.read(&format!("/proc/irq/{irq}/smp_affinity_list")) {
                cpus.extend(parse_cpu_list(&list).unwrap_or_default());
            }
        }
        if count > 0 {
            let cpus: Vec<usize> = cpus.into_iter().collect();
            parts.push(format!(
                "{nic}: {count} IRQs on CPUs {}",
                format_cpu_list(&cpus)
            ));
        }
    }
    if parts.is_empty() {
        return c.set("n/a (no MSI NIC)", recommended, Status::NotAvailable);
    }
    c.set(parts.join("; "), recommended, Status::Info)
}

// ---- parsers ----------------------------------------------------------------------------

/// The bracketed choice of a sysfs selector: `none [mq-deadline] kyber` → `mq-deadline`.
pub fn parse_bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    let choice = text[start + 1..end].trim();
    (!choice.is_empty()).then_some(choice)
}

/// The source (`/dev/nvme0n1p2`) of the mount holding `path`, from `/proc/self/mountinfo`:
/// the entry with the longest mount point that is a prefix of `path` (the last one wins when
/// mounts are stacked on the same point).
pub fn mount_source(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(source)) = (fields.get(4), fields.get(dash + 2)) else {
            continue;
        };
        // mountinfo escapes spaces and the like as octal (`\040`).
        let mount_point = unescape_octal(mount_point);
        if path.starts_with(&mount_point) {
            let depth = Path::new(&mount_point).components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, source.to_string()));
            }
        }
    }
    best.map(|(_, s)| s)
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u16, |n, b| n * 8 + u16::from(b - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (major, minor) of a kernel release string: `6.1.0-18-amd64` → (6, 1).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor_text: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor_text.parse().ok()?))
}

/// A kernel CPU list (`0-3,8,10-11`) as CPU numbers; `None` when malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// CPU numbers (sorted) back into the kernel's list form: `[0,1,2,5]` → `0-2,5`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// Splits a Linux `dev_t` into (major, minor), as glibc's `major()`/`minor()` do.
pub fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev & 0x0000_0000_000f_ff00) >> 8) | ((dev & 0xffff_f000_0000_0000) >> 32);
    let minor = (dev & 0x0000_0000_0000_00ff) | ((dev & 0x0000_0fff_fff0_0000) >> 12);
    (major, minor)
}

/// The name of a file system from its `statfs` magic number.
pub fn fs_name(magic: i64) -> &'static str {
    match magic {
        0xEF53 => "ext4", // ext2/3/4 share the magic; shardlog's O_DIRECT probe tells them apart
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x794c_7630 => "overlayfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xFF53_4D42 => "cifs",
        0x6573_5546 => "fuse",
        0xF2F5_2010 => "f2fs",
        _ => "other",
    }
}

/// `["performance", "performance", "powersave"]` → `performance x2, powersave x1`.
fn summarize(values: &[String]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    if counts.len() == 1 {
        return values[0].clone();
    }
    counts
        .iter()
        .map(|(v, n)| format!("{v} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `8388608` → `8 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size && n % size == 0 {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} B")
}

/// The system calls of the live probes; the only unsafe code of `tune`.
mod sys {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    /// The resource limits the checks read.
    pub enum Limit {
        Memlock,
        Nofile,
    }

    /// This process's effective user id.
    pub fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// The soft limit: `Some(None)` = unlimited, `None` = the call failed.
    pub fn rlimit(which: Limit) -> Option<Option<u64>> {
        let resource = match which {
            Limit::Memlock => libc::RLIMIT_MEMLOCK,
            Limit::Nofile => libc::RLIMIT_NOFILE,
        };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
        let rc = unsafe { libc::getrlimit(resource, &mut lim) };
        if rc != 0 {
            return None;
        }
        Some((lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur))
    }

    /// The `f_type` magic of the file system holding `path`.
    pub fn statfs_type(path: &Path) -> Result<i64, String> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: all-zero bytes are a valid `statfs` (plain integers).
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs for the call.
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between targets
        Ok(st.f_type as i64)
    }

    /// `struct io_uring_params` is 120 bytes of integers; zeroed it asks for defaults.
    #[repr(C)]
    struct IoUringParams([u32; 30]);

    /// Creates and closes a one-entry io_uring: the kernel's own answer to "is it usable".
    pub fn io_uring_probe() -> Result<(), String> {
        let mut params = IoUringParams([0; 30]);
        // SAFETY: io_uring_setup reads and writes `params`, a valid 120-byte struct that
        // outlives the call; the returned descriptor is ours and closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                1u32,
                &mut params as *mut IoUringParams,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        // SAFETY: `fd` is the descriptor io_uring_setup just returned to us.
        unsafe { libc::close(fd as libc::c_int) };
        Ok(())
    }

    /// Why the O_DIRECT probe failed.
    pub enum ProbeError {
        /// The probe file could not be created at all (permissions, read-only).
        Create(String),
        /// The file system refused O_DIRECT or an aligned direct write.
        Refused(String),
    }

    /// Creates a file with O_DIRECT in `dir`, writes one aligned 4 KiB block, removes it.
    pub fn o_direct_probe(dir: &Path) -> Result<(), ProbeError> {
        let path = dir.join(format!(".shardlog-tune-odirect-{}", std::process::id()));
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(ProbeError::Refused(format!("open: {e}")))
            }
            Err(e) => return Err(ProbeError::Create(e.to_string())),
        };
        // A 4096-aligned 4 KiB window inside an 8 KiB allocation: no unsafe allocator needed.
        let buf = vec![0u8; 8192];
        let offset = buf.as_ptr().align_offset(4096);
        let block = &buf[offset..offset + 4096];
        let written = std::io::Write::write(&mut file, block);
        drop(file);
        let _ = std::fs::remove_file(&path);
        match written {
            Ok(4096) => Ok(()),
            Ok(n) => Err(ProbeError::Refused(format!(
                "short direct write: {n} bytes"
            ))),
            Err(e) => Err(ProbeError::Refused(format!("write: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_choices() {
        assert_eq!(
            parse_bracketed("[none] mq-deadline kyber bfq"),
            Some("none")
        );
        assert_eq!(
            parse_bracketed("none [mq-deadline] kyber"),
            Some("mq-deadline")
        );
        assert_eq!(parse_bracketed("always [madvise] never\n"), Some("madvise"));
        assert_eq!(parse_bracketed("none"), None);
        assert_eq!(parse_bracketed("[]"), None);
        assert_eq!(parse_bracketed("[open"), None);
    }

    #[test]
    fn mount_sources() {
        let info = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:40 / /var/lib/shard\\040log rw,relatime shared:2 - btrfs /dev/nvme0n1p2 rw,subvol=/a
31 22 0:41 / /var rw - xfs /dev/nvme1n1 rw
32 22 0:42 / /mnt/x rw - overlay overlay rw
";
        let src = |p: &str| mount_source(info, Path::new(p));
        assert_eq!(
            src("/var/lib/shard log/data").as_deref(),
            Some("/dev/nvme0n1p2")
        );
        assert_eq!(src("/var/lib/other").as_deref(), Some("/dev/nvme1n1"));
        assert_eq!(
            src("/variable").as_deref(),
            Some("/dev/vda"),
            "prefix by component"
        );
        assert_eq!(src("/mnt/x/y").as_deref(), Some("overlay"));
        assert_eq!(mount_source("garbage\n", Path::new("/")), None);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("4.19rc1"), Some((4, 19)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5\n"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(split_dev(0xfe00), (254, 0));
        // major 259 minor 1 (an NVMe partition), as glibc encodes it.
        let dev = ((259u64 & 0xfff) << 8) | (1 & 0xff);
        assert_eq!(split_dev(dev), (259, 1));
        let big = ((4100u64 & !0xfff) << 32)
            | ((4100 & 0xfff) << 8)
            | ((70_000 & !0xff) << 12)
            | (70_000 & 0xff);
        assert_eq!(split_dev(big), (4100, 70_000));
    }

    #[test]
    fn fs_names_and_sizes() {
        assert_eq!(fs_name(0xEF53), "ext4");
        assert_eq!(fs_name(0x5846_5342), "xfs");
        assert_eq!(fs_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_name(1), "other");
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(1500), "1500 B");
        assert_eq!(summarize(&["a".into(), "a".into()]), "a");
        assert_eq!(
            summarize(&["b".into(), "a".into(), "b".into()]),
            "a x1, b x2"
        );
    }

    /// A fake host: `/proc` and `/sys` files in a temporary directory.
    fn fake(files: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        }
        let host = Host {
            root: dir.path().to_path_buf(),
            data_dir: dir.path().join("data"),
            shards: 2,
            probe: false,
        };
        (dir, host)
    }

    fn find<'a>(checks: &'a [Check], setting: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.setting == setting)
            .unwrap_or_else(|| panic!("no row {setting}"))
    }

    #[test]
    fn empty_host_is_all_not_available() {
        let (_d, host) = fake(&[]);
        let checks = check_all(&host);
        assert_eq!(checks.len(), 12);
        for c in &checks {
            assert_eq!(c.status, Status::NotAvailable, "{c:?}");
            assert!(!c.needs_fix());
        }
    }

    #[test]
    fn fake_host_values_are_judged() {
        let (_d, host) = fake(&[
            ("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
            ("/proc/sys/kernel/io_uring_disabled", "2\n"),
            ("/proc/sys/fs/aio-max-nr", "65536\n"),
            ("/proc/sys/net/core/somaxconn", "128\n"),
            (
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "[always] madvise never\n",
            ),
            (
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "powersave\n",
            ),
            (
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_available_governors",
                "performance powersave\n",
            ),
            (
                "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
                "performance\n",
            ),
            ("/sys/devices/system/cpu/cpufreq/boost", "1\n"),
            ("/sys/class/net/eth0/device/msi_irqs/40", ""),
            ("/sys/class/net/eth0/device/msi_irqs/41", ""),
            ("/proc/irq/40/smp_affinity_list", "0\n"),
            ("/proc/irq/41/smp_affinity_list", "1-2\n"),
        ]);
        let checks = check_all(&host);
        assert_eq!(find(&checks, "kernel").status, Status::Ok);
        assert_eq!(find(&checks, "io_uring").status, Status::Bad);
        assert_eq!(find(&checks, "fs.aio-max-nr").status, Status::Info);
        let s = find(&checks, "net.core.somaxconn");
        assert_eq!((s.status, s.now.as_str()), (Status::Warn, "128"));
        assert!(s.needs_fix());
        assert_eq!(s.fix[0].value, "4096");
        assert!(s.fix[0].path.starts_with(&host.root));
        let t = find(&checks, "transparent huge pages");
        assert_eq!((t.status, t.now.as_str()), (Status::Warn, "always"));
        let g = find(&checks, "CPU frequency governor");
        assert_eq!(g.status, Status::Warn);
        assert_eq!(g.now, "performance x1, powersave x1");
        assert_eq!(g.fix.len(), 1, "only cpu0 needs a change");
        let n = find(&checks, "NIC IRQ affinity");
        assert_eq!(n.now, "eth0: 2 IRQs on CPUs 0-2");

        // Applying writes the fake files, and a second look finds them as recommended.
        let applied = apply(&checks);
        assert!(applied.iter().all(|a| a.result.is_ok()), "{applied:?}");
        let again = check_all(&host);
        assert_eq!(find(&again, "net.core.somaxconn").status, Status::Ok);
        assert_eq!(find(&again, "fs.aio-max-nr").now, "1048576");
        assert_eq!(find(&again, "CPU frequency governor").status, Status::Ok);
        assert_eq!(find(&again, "transparent huge pages").now, "madvise");
    }

    #[test]
    fn scheduler_of_the_data_disk_found_through_mountinfo() {
        let (d, host) = fake(&[
            (
                "/proc/self/mountinfo",
                "1 0 0:99 / / rw - btrfs /dev/nvme0n1p1 rw\n",
            ),
            (
                "/sys/devices/pci0/nvme/nvme0n1/queue/scheduler",
                "[mq-deadline] none\n",
            ),
            ("/sys/devices/pci0/nvme/nvme0n1/queue/rotational", "0\n"),
            ("/sys/devices/pci0/nvme/nvme0n1/nvme0n1p1/partition", "1\n"),
        ]);
        let class = d.path().join("sys/class/block");
        std::fs::create_dir_all(&class).expect("mkdir");
        std::os::unix::fs::symlink(
            d.path().join("sys/devices/pci0/nvme/nvme0n1/nvme0n1p1"),
            class.join("nvme0n1p1"),
        )
        .expect("symlink");
        let c = check_scheduler(&host);
        assert_eq!(c.now, "nvme0n1: mq-deadline", "{c:?}");
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.fix.len(), 1);
        assert!(c.fix[0].path.ends_with("nvme0n1/queue/scheduler"));
        assert_eq!(c.fix[0].value, "none");
    }

    #[test]
    fn table_is_aligned_with_a_header() {
        let (_d, host) = fake(&[("/proc/sys/net/core/somaxconn", "4096\n")]);
        let table = render_table(&check_all(&host));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 13);
        let header = lines[0];
        assert!(header.starts_with("SETTING"));
        let col = |name: &str| header.find(name).expect("column");
        let (now, status) = (col("NOW"), col("STATUS"));
        let row = lines
            .iter()
            .find(|l| l.starts_with("net.core.somaxconn"))
            .expect("row");
        assert_eq!(&row[now..now + 4], "4096");
        assert_eq!(&row[status..status + 2], "ok");
    }
}
