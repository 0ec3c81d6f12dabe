//! The open-file budget: how the process's descriptors (`RLIMIT_NOFILE`) are shared between
//! client connections and partition logs, decided once at start.
//!
//! A broker that runs out of descriptors fails in the worst place: a segment roll or a
//! partition open gets `EMFILE` while data is arriving. So the limit is split up front and both
//! sides are refused cleanly before they could cross it:
//!
//! - the soft limit is raised to the hard one at start (as Kafka's and Redpanda's packaging
//!   recommend doing with `LimitNOFILE`);
//! - [`FDS_RESERVED_MIN`] stay for the process itself (the data dir, metadata files, the
//!   metrics listener, io_uring rings);
//! - connections get at most a third of the rest: `shard.connections.max` is lowered to fit,
//!   and connections beyond it are closed at accept;
//! - partitions get the other two thirds, one descriptor each (a written partition holds its
//!   active segment open; rolled segments take what hosted-but-idle partitions leave).
//!   CreateTopics and CreatePartitions that would host more partitions than that are refused
//!   with INVALID_PARTITIONS and a message naming the limit (Redpanda refuses the same way;
//!   Kafka has no such check and takes its log dir offline on `EMFILE` instead).
//!
//! Partitions come first because they are the data: at this machine's hard limit of 20,000 a
//! one-shard broker hosts 13,292 partitions (issue 16's 10,000 fit) and 3,322 connections
//! (two descriptors each: the socket and the writer's dup of it).

/// Descriptors one client connection holds: the socket and the writer task's dup of it.
pub const FDS_PER_CONNECTION: u64 = 2;
/// Descriptors never given to connections or partitions.
pub const FDS_RESERVED_MIN: u64 = 64;

/// How the open-file limit is shared; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` in force after start.
    pub open_files_limit: u64,
    /// Client connections each shard may hold.
    pub connections_per_shard_max: usize,
    /// Partitions the broker may host.
    pub partitions_max: usize,
}

impl FdBudget {
    /// Splits `open_files_limit` for a broker of `shards` shards.
    pub fn split(open_files_limit: u64, shards: usize) -> FdBudget {
        let shards = shards.max(1) as u64;
        let usable = open_files_limit.saturating_sub(FDS_RESERVED_MIN);
        let connections_per_shard = (usable / 3) / (FDS_PER_CONNECTION * shards);
        let connection_fds = connections_per_shard * FDS_PER_CONNECTION * shards;
        let partition_fds = usable - connection_fds;
        FdBudget {
            open_files_limit,
            connections_per_shard_max: (connections_per_shard as usize).max(1),
            partitions_max: (partition_fds as usize).max(1),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force
/// afterwards; `None` when it is unknown or unlimited (then no budget applies).
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t differs between platforms
    Some(lim.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shares_the_limit_and_never_overcommits() {
        for (limit, shards) in [(1024, 1), (1024, 2), (20_000, 2), (1 << 20, 16), (100, 8)] {
            let b = FdBudget::split(limit, shards);
            let used = b.connections_per_shard_max as u64 * FDS_PER_CONNECTION * shards as u64
                + b.partitions_max as u64
                + FDS_RESERVED_MIN;
            assert!(
                used <= limit || limit < 2 * FDS_RESERVED_MIN,
                "{limit}/{shards}: {b:?}"
            );
        }
        // This machine's hard limit: issue 16's 10,000 partitions fit on one shard or two.
        let b = FdBudget::split(20_000, 1);
        assert_eq!(
            (b.connections_per_shard_max, b.partitions_max),
            (3_322, 13_292)
        );
        let b = FdBudget::split(20_000, 2);
        assert_eq!(b.connections_per_shard_max, 1_661);
        assert!(b.partitions_max >= 10_000, "{b:?}");
        // The common default soft limit still leaves room for a few hundred partitions.
        assert!(FdBudget::split(1024, 2).partitions_max >= 300);
    }
}
