//! Start-up progress of every shard, and a watchdog that names the phase a slow start is in.
//!
//! A start after `kill -9` has been seen to stall, rarely (about once in a few hundred
//! restarts), with every shard thread asleep in io_uring. Recovery of a large log can also
//! legitimately take long. Either way an operator (and a failing test's log) needs to know
//! where each shard is: the watchdog logs it at WARN every [`STALL_REPORT_EVERY`] until every
//! shard serves. It only reads atomics the shards set; it never interferes with start-up.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long start-up may take before the watchdog reports, and how often it repeats.
pub const STALL_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The start-up phases of one shard, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// The executor thread exists; nothing done yet.
    Spawned = 0,
    /// Joining the cross-shard channel mesh.
    JoiningMesh,
    /// Opening the shard's storage (O_DIRECT and IOPOLL probes).
    OpeningStorage,
    /// Opening and recovering the partitions the shard owns.
    OpeningPartitions,
    /// Waiting at the `opened` barrier for the other shards.
    WaitingOpened,
    /// Replaying consumer-group state from `__consumer_offsets`.
    ReplayingGroups,
    /// Binding the listener and waiting at the `ready` barrier.
    WaitingReady,
    /// Accepting connections.
    Serving,
    /// Start-up failed on this shard.
    Failed,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::JoiningMesh,
            2 => Phase::OpeningStorage,
            3 => Phase::OpeningPartitions,
            4 => Phase::WaitingOpened,
            5 => Phase::ReplayingGroups,
            6 => Phase::WaitingReady,
            7 => Phase::Serving,
            8 => Phase::Failed,
            _ => Phase::Spawned,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Phase::Spawned => "not started",
            Phase::JoiningMesh => "joining the mesh",
            Phase::OpeningStorage => "opening storage (I/O probes)",
            Phase::OpeningPartitions => "opening partitions",
            Phase::WaitingOpened => "waiting for the other shards to open",
            Phase::ReplayingGroups => "replaying groups",
            Phase::WaitingReady => "binding the listener",
            Phase::Serving => "serving",
            Phase::Failed => "failed",
        }
    }
}

/// Each shard's current start-up phase; written by the shard, read by the watchdog.
pub struct StartupProgress {
    phases: Vec<AtomicU8>,
    done: AtomicBool,
}

impl StartupProgress {
    /// Progress for `shards` shards, all at [`Phase::Spawned`].
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(StartupProgress {
            phases: (0..shards).map(|_| AtomicU8::new(0)).collect(),
            done: AtomicBool::new(false),
        })
    }

    /// Records that `shard` entered `phase` (also logged at debug level).
    pub fn enter(&self, shard: usize, phase: Phase) {
        tracing::debug!(shard, phase = phase.describe(), "start-up");
        if let Some(p) = self.phases.get(shard) {
            p.store(phase as u8, Ordering::SeqCst);
        }
    }

    /// Stops the watchdog (the broker is shutting down or every shard has ended).
    pub fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    fn snapshot(&self) -> Vec<Phase> {
        self.phases
            .iter()
            .map(|p| Phase::from_u8(p.load(Ordering::SeqCst)))
            .collect()
    }

    /// Starts the watchdog thread: every [`STALL_REPORT_EVERY`] while some shard is neither
    /// serving nor failed, logs each shard's phase at WARN. Ends once all serve or
    /// [`StartupProgress::finish`] is called.
    pub fn spawn_watchdog(self: &Arc<Self>) {
        let progress = self.clone();
        let spawned = std::thread::Builder::new()
            .name("startup-watchdog".into())
            .spawn(move || {
                let start = Instant::now();
                let mut next_report = start + STALL_REPORT_EVERY;
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    if progress.done.load(Ordering::SeqCst) {
                        return;
                    }
                    let phases = progress.snapshot();
                    if phases
                        .iter()
                        .all(|p| matches!(p, Phase::Serving | Phase::Failed))
                    {
                        return;
                    }
                    if Instant::now() >= next_report {
                        next_report += STALL_REPORT_EVERY;
                        let where_ = phases
                            .iter()
                            .enumerate()
                            .map(|(i, p)| format!("shard {i}: {}", p.describe()))
                            .collect::<Vec<_>>()
                            .join("; ");
                        tracing::warn!(
                            after_s = start.elapsed().as_secs(),
                            phases = %where_,
                            "start-up is taking long"
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no start-up watchdog");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_order() {
        let p = StartupProgress::new(2);
        assert_eq!(p.snapshot(), vec![Phase::Spawned, Phase::Spawned]);
        p.enter(1, Phase::OpeningPartitions);
        p.enter(0, Phase::Serving);
        assert_eq!(p.snapshot(), vec![Phase::Serving, Phase::OpeningPartitions]);
        p.enter(7, Phase::Failed); // out of range: ignored
        for v in 0..=8u8 {
            assert_eq!(Phase::from_u8(v) as u8, v);
        }
        assert!(Phase::JoiningMesh < Phase::Serving);
    }
}
