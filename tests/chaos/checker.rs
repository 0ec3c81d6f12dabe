//! The checker of a chaos run's history, in the spirit of Jepsen's Kafka queue workload.
//!
//! A history is a list of [`Event`]s (one JSON object per line in the history file): every
//! send, acknowledgement and failed send of the producers, every record a consumer polled, the
//! final read of every partition from its log start after the faults healed, and the faults
//! themselves. [`check`] reports:
//!
//! - **lost acknowledged writes**: a value acknowledged at (partition, offset) that the final
//!   read does not hold (an acknowledgement without an offset, which librdkafka's idempotent
//!   producer reports as offset -1001 when it learns of the success indirectly, is judged by
//!   its value alone);
//! - **duplicates**: a value of an idempotent producer stored at more than one offset of the
//!   final log (values of non-idempotent producers may be written twice by retries, as in
//!   Kafka: they are counted, not reported);
//! - **inconsistent offsets**: two different values at one (partition, offset) in what the
//!   broker acknowledged and what the final read found;
//! - **lost reads**: a consumer polled a value at an offset where the final log holds another
//!   value or none: what it was served was lost afterwards (Jepsen counts these among its
//!   inconsistent offsets; they are kept apart here because they concern reads only);
//! - **skipped records**: a consumer polled offset a, then offset b of a partition in one
//!   assignment session, and the final log holds records between them;
//! - **non-monotonic polls**: a consumer polled offset b after offset a >= b of a partition in
//!   one assignment session; reported apart (`ResetAfterLostRead`) when what it polled at a
//!   was lost, since its client then resets a position past the log's end, and apart
//!   (`RereadAfterKill`) when a kill -9 came between the two polls and it read again exactly
//!   what it had read at those offsets (the lost unsynced tail written again, identically, by
//!   an idempotent producer's retry: a lost read whose value came back);
//! - **incomplete final reads**: the final read of a partition stopped short of its high
//!   watermark (the acknowledged offsets past where it stopped are not judged).
//!
//! Each finding names its partition, its offsets, and the faults injected while the records it
//! concerns were in flight (from the first event concerned to the last).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One entry of a history. `t_ms` is milliseconds since the run started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A producer handed `value` to its client for `partition`.
    Send {
        t_ms: u64,
        producer: String,
        idempotent: bool,
        partition: i32,
        value: String,
    },
    /// The broker acknowledged `value` (acks=all) at `offset`.
    Ack {
        t_ms: u64,
        producer: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// The send of `value` failed for good (the client gave up): it may or may not be stored.
    SendFailed {
        t_ms: u64,
        producer: String,
        partition: i32,
        value: String,
        error: String,
    },
    /// A consumer began an assignment session (a new assignment, a rebalance, a restart):
    /// positions may go back, as after any Kafka rebalance.
    Session {
        t_ms: u64,
        consumer: String,
        session: u64,
    },
    /// A consumer polled `value` at (`partition`, `offset`) in its session `session`.
    Read {
        t_ms: u64,
        consumer: String,
        session: u64,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// The final read (after every fault healed) found `value` at (`partition`, `offset`).
    FinalRead {
        t_ms: u64,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// The final read of `partition` read up to `reached` (exclusive) of its high watermark
    /// `high_watermark`: complete when they are equal.
    FinalEnd {
        t_ms: u64,
        partition: i32,
        high_watermark: i64,
        reached: i64,
    },
    /// A fault was injected or healed (`action` says which, e.g. "kill -9 node 2").
    Fault { t_ms: u64, action: String },
}

/// What kind of anomaly a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LostAcknowledged,
    Duplicate,
    InconsistentOffset,
    LostRead,
    Skipped,
    NonMonotonic,
    /// A non-monotonic poll right after a lost read: the consumer's position lay past the end
    /// of the log that survived, and its client reset it (`auto.offset.reset`).
    ResetAfterLostRead,
    /// A non-monotonic poll across a kill -9 that reads again exactly what the consumer read at
    /// those offsets before: what it read had been lost with the unsynced tail (its position
    /// lay past the restarted log's end) and an idempotent producer's retry wrote the same
    /// values at the same offsets again, so no `LostRead` shows.
    RereadAfterKill,
    IncompleteFinalRead,
}

/// One anomaly: where (partition, offsets), what, and the faults around it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub partition: i32,
    pub offsets: Vec<i64>,
    pub detail: String,
    /// The faults injected between the first and the last event concerned (with their time).
    pub faults: Vec<String>,
}

/// The outcome of [`check`]: counts and findings.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub sends: usize,
    pub acknowledged: usize,
    pub failed_sends: usize,
    pub reads: usize,
    pub final_records: usize,
    pub faults: usize,
    /// Values of non-idempotent producers stored more than once (allowed, as in Kafka).
    pub non_idempotent_duplicates: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    /// The number of findings of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }

    /// A human summary: the counts, then each finding on its own line (at most `max` of them).
    pub fn summary(&self, max: usize) -> String {
        let mut s = format!(
            "sends {}, acknowledged {}, failed sends {}, reads {}, final records {}, faults {}, \
             non-idempotent duplicates {}, findings {}",
            self.sends,
            self.acknowledged,
            self.failed_sends,
            self.reads,
            self.final_records,
            self.faults,
            self.non_idempotent_duplicates,
            self.findings.len()
        );
        for f in self.findings.iter().take(max) {
            s.push_str(&format!(
                "\n  {:?} partition {} offsets {:?}: {} (faults: {})",
                f.kind,
                f.partition,
                f.offsets,
                f.detail,
                if f.faults.is_empty() {
                    "none".to_string()
                } else {
                    f.faults.join("; ")
                }
            ));
        }
        if self.findings.len() > max {
            s.push_str(&format!("\n  ... and {} more", self.findings.len() - max));
        }
        s
    }
}

/// Writes `events` as JSON lines to `path`.
pub fn write_history(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads a history written by [`write_history`]; a line that does not parse is an error
/// naming its number.
pub fn read_history(path: &Path) -> Result<Vec<Event>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// The values seen at one (partition, offset): who saw each first, and when (ms).
type Seen<'a> = BTreeMap<&'a str, (String, u64)>;

/// Checks a history; see the module documentation for what is reported.
pub fn check(history: &[Event]) -> Report {
    let mut r = Report::default();
    let faults: Vec<(u64, &str)> = history
        .iter()
        .filter_map(|e| match e {
            Event::Fault { t_ms, action } => Some((*t_ms, action.as_str())),
            _ => None,
        })
        .collect();
    r.faults = faults.len();
    let faults_between = |from: u64, to: u64| -> Vec<String> {
        faults
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(t, a)| format!("{a} at {:.1} s", *t as f64 / 1000.0))
            .collect()
    };

    // What each value is: its producer's idempotence and when it was first sent.
    let mut sent: HashMap<&str, (bool, u64)> = HashMap::new();
    // Every value acknowledged or finally read at (partition, offset), with who saw it first
    // and when.
    let mut at: BTreeMap<(i32, i64), Seen> = BTreeMap::new();
    let mut final_log: BTreeMap<i32, BTreeMap<i64, &str>> = BTreeMap::new();
    // Per partition: (high watermark, reached) of the final read.
    let mut final_end: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut final_t = 0u64;
    for e in history {
        match e {
            Event::Send {
                t_ms,
                idempotent,
                value,
                ..
            } => {
                r.sends += 1;
                sent.entry(value).or_insert((*idempotent, *t_ms));
            }
            Event::Ack {
                t_ms,
                producer,
                partition,
                offset,
                value,
            } => {
                r.acknowledged += 1;
                if *offset < 0 {
                    // Acknowledged without an offset: judged by its value only (below).
                    continue;
                }
                at.entry((*partition, *offset))
                    .or_default()
                    .entry(value)
                    .or_insert((format!("ack to {producer}"), *t_ms));
            }
            Event::SendFailed { .. } => r.failed_sends += 1,
            Event::Session { .. } | Event::Fault { .. } => {}
            Event::Read { .. } => r.reads += 1,
            Event::FinalRead {
                t_ms,
                partition,
                offset,
                value,
            } => {
                r.final_records += 1;
                final_t = final_t.max(*t_ms);
                at.entry((*partition, *offset))
                    .or_default()
                    .entry(value)
                    .or_insert(("final read".to_string(), *t_ms));
                final_log
                    .entry(*partition)
                    .or_default()
                    .insert(*offset, value);
            }
            Event::FinalEnd {
                t_ms,
                partition,
                high_watermark,
                reached,
            } => {
                final_t = final_t.max(*t_ms);
                final_end.insert(*partition, (*high_watermark, *reached));
            }
        }
    }
    let first_sent = |v: &str, fallback: u64| sent.get(v).map_or(fallback, |s| s.1);
    // Whether the final read says what (partition, offset) holds: it read the partition to its
    // high watermark, or at least past the offset.
    let judged = |partition: i32, offset: i64| {
        final_end
            .get(&partition)
            .is_some_and(|&(high, reached)| reached >= high || offset < reached)
    };

    // Inconsistent offsets: more than one value at one place.
    for (&(partition, offset), values) in &at {
        if values.len() > 1 {
            let from = values
                .iter()
                .map(|(v, (_, t))| first_sent(v, *t))
                .min()
                .unwrap_or(0);
            let to = values.values().map(|(_, t)| *t).max().unwrap_or(0);
            r.findings.push(Finding {
                kind: Kind::InconsistentOffset,
                partition,
                offsets: vec![offset],
                detail: values
                    .iter()
                    .map(|(v, (who, _))| format!("{v:?} ({who})"))
                    .collect::<Vec<_>>()
                    .join(" vs "),
                faults: faults_between(from, to),
            });
        }
    }

    // Lost acknowledged writes, and final reads that stopped short of them.
    let mut final_offsets_of: HashMap<(i32, &str), BTreeSet<i64>> = HashMap::new();
    for (&p, log) in &final_log {
        for (&o, &v) in log {
            final_offsets_of.entry((p, v)).or_default().insert(o);
        }
    }
    let mut incomplete: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for e in history {
        let Event::Ack {
            t_ms,
            producer,
            partition,
            offset,
            value,
        } = e
        else {
            continue;
        };
        // An acknowledgement without an offset needs the whole partition read.
        let judge_at = if *offset < 0 { i64::MAX } else { *offset };
        if !judged(*partition, judge_at) {
            incomplete.entry(*partition).or_default().push(*offset);
            continue;
        }
        if !final_offsets_of.contains_key(&(*partition, value.as_str())) {
            let stored = final_log
                .get(partition)
                .and_then(|l| l.get(offset))
                .map_or("nothing".to_string(), |v| format!("{v:?}"));
            r.findings.push(Finding {
                kind: Kind::LostAcknowledged,
                partition: *partition,
                offsets: vec![*offset],
                detail: format!(
                    "{value:?} acknowledged to {producer} at {:.1} s; the final read has \
                     {stored} there",
                    *t_ms as f64 / 1000.0
                ),
                faults: faults_between(first_sent(value, *t_ms), final_t),
            });
        }
    }
    for (partition, offsets) in incomplete {
        r.findings.push(Finding {
            kind: Kind::IncompleteFinalRead,
            partition,
            detail: match final_end.get(&partition) {
                Some((high, reached)) => format!(
                    "the final read stopped at {reached} of {high}: {} acknowledged offsets \
                     not judged",
                    offsets.len()
                ),
                None => format!(
                    "no final read: {} acknowledged offsets not judged",
                    offsets.len()
                ),
            },
            offsets,
            faults: Vec::new(),
        });
    }

    // Duplicates: one value at several offsets of the final log (in a stable order).
    let offsets_of: BTreeMap<(i32, &str), &BTreeSet<i64>> =
        final_offsets_of.iter().map(|(k, o)| (*k, o)).collect();
    for ((partition, value), offsets) in &offsets_of {
        if offsets.len() < 2 {
            continue;
        }
        match sent.get(value) {
            Some((false, _)) => r.non_idempotent_duplicates += 1,
            _ => {
                let t = first_sent(value, 0);
                r.findings.push(Finding {
                    kind: Kind::Duplicate,
                    partition: *partition,
                    offsets: offsets.iter().copied().collect(),
                    detail: format!("{value:?} of an idempotent producer stored more than once"),
                    faults: faults_between(t, final_t),
                })
            }
        }
    }

    // Per consumer session and partition: order, skips, reads of values the log lost (one
    // finding per value and offset, naming every consumer that read it there).
    // Per (consumer, session, partition): the last offset polled, when, and whether what was
    // polled there was lost.
    let mut last: HashMap<(&str, u64, i32), (i64, u64, bool)> = HashMap::new();
    // What each consumer session polled at each offset (the first time).
    let mut polled: HashMap<(&str, u64, i32, i64), &str> = HashMap::new();
    let kill_between = |from: u64, to: u64| {
        faults
            .iter()
            .any(|(t, a)| *t >= from && *t <= to && a.starts_with("kill -9"))
    };
    let mut lost_reads: BTreeMap<(i32, i64, &str), (Vec<&str>, u64)> = BTreeMap::new();
    for e in history {
        let Event::Read {
            t_ms,
            consumer,
            session,
            partition,
            offset,
            value,
        } = e
        else {
            continue;
        };
        let log = final_log.get(partition);
        let lost = judged(*partition, *offset)
            && log.and_then(|l| l.get(offset)).copied() != Some(value.as_str());
        if lost {
            let e = lost_reads
                .entry((*partition, *offset, value.as_str()))
                .or_insert((Vec::new(), *t_ms));
            if !e.0.contains(&consumer.as_str()) {
                e.0.push(consumer);
            }
        }
        let key = (consumer.as_str(), *session, *partition);
        let before = polled
            .entry((consumer.as_str(), *session, *partition, *offset))
            .or_insert(value.as_str());
        let same_again = *before == value.as_str();
        if let Some(&(prev, prev_t, prev_lost)) = last.get(&key) {
            if *offset <= prev {
                let reread = !prev_lost && same_again && kill_between(prev_t, *t_ms);
                r.findings.push(Finding {
                    kind: if prev_lost {
                        Kind::ResetAfterLostRead
                    } else if reread {
                        Kind::RereadAfterKill
                    } else {
                        Kind::NonMonotonic
                    },
                    partition: *partition,
                    offsets: vec![prev, *offset],
                    detail: format!(
                        "{consumer} (session {session}) polled offset {offset} after {prev}{}",
                        if prev_lost {
                            " (what it polled at the previous offset was lost: its position lay \
                             past the log's end, and the client reset it)"
                        } else if reread {
                            " (the same value as its earlier poll there, with a kill -9 between: \
                             the unsynced tail it had read was lost and written again by a retry)"
                        } else {
                            ""
                        }
                    ),
                    faults: faults_between(prev_t, *t_ms),
                });
            } else if let Some(log) = log {
                let skipped: Vec<i64> = log.range(prev + 1..*offset).map(|(o, _)| *o).collect();
                if !skipped.is_empty() {
                    r.findings.push(Finding {
                        kind: Kind::Skipped,
                        partition: *partition,
                        detail: format!(
                            "{consumer} (session {session}) polled offset {offset} after \
                             {prev}, skipping {} record(s) of the final log",
                            skipped.len()
                        ),
                        offsets: skipped,
                        faults: faults_between(prev_t, *t_ms),
                    });
                }
            }
        }
        last.insert(key, (*offset, *t_ms, lost));
    }
    for ((partition, offset, value), (consumers, t)) in lost_reads {
        let now = final_log
            .get(&partition)
            .and_then(|l| l.get(&offset))
            .map_or("nothing".to_string(), |v| format!("{v:?}"));
        r.findings.push(Finding {
            kind: Kind::LostRead,
            partition,
            offsets: vec![offset],
            detail: format!(
                "{} read {value:?} there (first at {:.1} s); the final log has {now}",
                consumers.join(", "),
                t as f64 / 1000.0
            ),
            // From the first read to the first sign of the loss: another value acknowledged or
            // found there.
            faults: faults_between(
                t,
                at.get(&(partition, offset))
                    .and_then(|seen| {
                        seen.values()
                            .map(|(_, at_t)| *at_t)
                            .filter(|x| *x >= t)
                            .min()
                    })
                    .unwrap_or(final_t),
            ),
        });
    }
    r.findings
        .sort_by(|a, b| (a.kind, a.partition, &a.offsets).cmp(&(b.kind, b.partition, &b.offsets)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(t: u64, producer: &str, idempotent: bool, partition: i32, value: &str) -> Event {
        Event::Send {
            t_ms: t,
            producer: producer.into(),
            idempotent,
            partition,
            value: value.into(),
        }
    }
    fn ack(t: u64, producer: &str, partition: i32, offset: i64, value: &str) -> Event {
        Event::Ack {
            t_ms: t,
            producer: producer.into(),
            partition,
            offset,
            value: value.into(),
        }
    }
    fn read(t: u64, consumer: &str, session: u64, partition: i32, offset: i64, v: &str) -> Event {
        Event::Read {
            t_ms: t,
            consumer: consumer.into(),
            session,
            partition,
            offset,
            value: v.into(),
        }
    }
    fn fin(partition: i32, offset: i64, value: &str) -> Event {
        Event::FinalRead {
            t_ms: 10_000,
            partition,
            offset,
            value: value.into(),
        }
    }
    fn end(partition: i32, high_watermark: i64) -> Event {
        Event::FinalEnd {
            t_ms: 10_000,
            partition,
            high_watermark,
            reached: high_watermark,
        }
    }
    fn fault(t: u64, action: &str) -> Event {
        Event::Fault {
            t_ms: t,
            action: action.into(),
        }
    }

    /// Two producers (one idempotent), two consumers, three records on partition 0 and one on
    /// partition 1, every one read back in order: nothing to report.
    fn clean() -> Vec<Event> {
        vec![
            send(0, "p1", true, 0, "a"),
            send(1, "p2", false, 0, "b"),
            send(2, "p1", true, 1, "c"),
            ack(5, "p1", 0, 0, "a"),
            ack(6, "p2", 0, 1, "b"),
            ack(7, "p1", 1, 0, "c"),
            fault(8, "kill -9 node 2"),
            send(9, "p1", true, 0, "d"),
            fault(10, "restart node 2"),
            ack(12, "p1", 0, 2, "d"),
            Event::Session {
                t_ms: 1,
                consumer: "c1".into(),
                session: 1,
            },
            read(13, "c1", 1, 0, 0, "a"),
            read(14, "c1", 1, 0, 1, "b"),
            read(15, "c1", 1, 1, 0, "c"),
            read(16, "c1", 1, 0, 2, "d"),
            read(17, "c2", 1, 0, 1, "b"),
            // A new session may go back (a rebalance from the committed offset).
            read(18, "c2", 2, 0, 0, "a"),
            read(19, "c2", 2, 0, 1, "b"),
            fin(0, 0, "a"),
            fin(0, 1, "b"),
            fin(0, 2, "d"),
            fin(1, 0, "c"),
            end(0, 3),
            end(1, 1),
        ]
    }

    /// Adds `value` at the end of partition `p`'s final log (offset 3 of the clean history's
    /// partition 0), moving its end.
    fn append_final(h: &mut Vec<Event>, p: i32, value: &str) {
        h.retain(|e| !matches!(e, Event::FinalEnd { partition, .. } if *partition == p));
        h.push(fin(p, 3, value));
        h.push(end(p, 4));
    }

    fn kinds(h: &[Event]) -> Vec<Kind> {
        check(h).findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn checker_passes_a_clean_history() {
        let r = check(&clean());
        assert!(r.findings.is_empty(), "{}", r.summary(10));
        assert_eq!((r.sends, r.acknowledged, r.reads, r.faults), (4, 4, 7, 2));
    }

    #[test]
    fn checker_passes_retried_duplicates_of_a_non_idempotent_producer() {
        let mut h = clean();
        // "b" (producer p2, not idempotent) was retried and stored twice: allowed, counted.
        append_final(&mut h, 0, "b");
        let r = check(&h);
        assert!(r.findings.is_empty(), "{}", r.summary(10));
        assert_eq!(r.non_idempotent_duplicates, 1);
    }

    #[test]
    fn checker_finds_a_lost_acknowledged_write_and_names_the_faults() {
        let mut h = clean();
        // The final log lost "d" (offset 2 of partition 0), acknowledged after the kill.
        h.retain(|e| !matches!(e, Event::FinalRead { value, .. } if value == "d"));
        h.retain(|e| !matches!(e, Event::FinalEnd { partition: 0, .. }));
        h.push(end(0, 3));
        let r = check(&h);
        let lost: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.kind == Kind::LostAcknowledged)
            .collect();
        assert_eq!(lost.len(), 1, "{}", r.summary(10));
        assert_eq!((lost[0].partition, lost[0].offsets.clone()), (0, vec![2]));
        assert!(lost[0].detail.contains("\"d\""), "{}", lost[0].detail);
        assert_eq!(lost[0].faults, vec!["restart node 2 at 0.0 s".to_string()]);
        // c1 read "d" at offset 2, which the final log no longer holds.
        assert_eq!(r.count(Kind::LostRead), 1, "{}", r.summary(10));
    }

    #[test]
    fn checker_finds_a_final_read_that_stopped_short() {
        let mut h = clean();
        // The read of partition 0 stopped at 2 of 3: offset 2 ("d") is not judged lost.
        h.retain(|e| !matches!(e, Event::FinalEnd { partition: 0, .. }));
        h.retain(|e| !matches!(e, Event::FinalRead { value, .. } if value == "d"));
        h.push(Event::FinalEnd {
            t_ms: 10_000,
            partition: 0,
            high_watermark: 3,
            reached: 2,
        });
        let r = check(&h);
        assert_eq!(
            kinds(&h),
            vec![Kind::IncompleteFinalRead],
            "{}",
            r.summary(10)
        );
        assert_eq!(r.findings[0].offsets, vec![2]);
    }

    #[test]
    fn checker_finds_acknowledged_writes_past_a_lower_high_watermark() {
        let mut h = clean();
        // The log of partition 0 was cut to 2 records: "d", acknowledged at 2, is lost.
        h.retain(|e| !matches!(e, Event::FinalEnd { partition: 0, .. }));
        h.retain(|e| !matches!(e, Event::FinalRead { value, .. } if value == "d"));
        h.push(end(0, 2));
        let r = check(&h);
        assert_eq!(r.count(Kind::LostAcknowledged), 1, "{}", r.summary(10));
    }

    #[test]
    fn checker_finds_duplicates_of_an_idempotent_producer() {
        let mut h = clean();
        append_final(&mut h, 0, "a");
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Duplicate], "{}", r.summary(10));
        assert_eq!(r.findings[0].offsets, vec![0, 3]);
    }

    #[test]
    fn checker_finds_two_values_at_one_offset() {
        let mut h = clean();
        // "x" was acknowledged at offset 1 of partition 0, where "b" was acknowledged and is
        // stored: two values at one offset, and "x" lost.
        h.push(send(3, "p2", false, 0, "x"));
        h.push(ack(4, "p2", 0, 1, "x"));
        let r = check(&h);
        assert_eq!(
            kinds(&h),
            vec![Kind::LostAcknowledged, Kind::InconsistentOffset],
            "{}",
            r.summary(10)
        );
        let f = &r.findings[1];
        assert_eq!((f.partition, f.offsets.clone()), (0, vec![1]));
        assert!(f.detail.contains("\"x\" (ack to p2)"), "{}", f.detail);
    }

    #[test]
    fn checker_finds_a_read_of_a_value_the_log_lost() {
        let mut h = clean();
        // Consumers c2 and c3 were served "x" at offset 1 of partition 0; the log holds "b".
        h.push(send(3, "p2", false, 0, "x"));
        h.push(read(20, "c2", 3, 0, 1, "x"));
        h.push(read(21, "c3", 1, 0, 1, "x"));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::LostRead], "{}", r.summary(10));
        let f = &r.findings[0];
        assert_eq!((f.partition, f.offsets.clone()), (0, vec![1]));
        assert!(
            f.detail.contains("c2, c3 read \"x\"") && f.detail.contains("has \"b\""),
            "{}",
            f.detail
        );
    }

    #[test]
    fn checker_finds_a_skipped_record() {
        let mut h = clean();
        // c3 reads offsets 0 then 2 of partition 0 in one session: offset 1 ("b") skipped.
        h.push(read(20, "c3", 1, 0, 0, "a"));
        h.push(read(21, "c3", 1, 0, 2, "d"));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::Skipped], "{}", r.summary(10));
        assert_eq!(r.findings[0].offsets, vec![1]);
    }

    #[test]
    fn checker_tells_a_reset_after_a_lost_read_from_a_non_monotonic_poll() {
        let mut h = clean();
        // c3 was served "x" at offset 3 of partition 0, which the log lost; its client then
        // went back to offset 0.
        h.push(send(3, "p2", false, 0, "x"));
        h.push(read(20, "c3", 1, 0, 2, "d"));
        h.push(read(21, "c3", 1, 0, 3, "x"));
        h.push(read(22, "c3", 1, 0, 0, "a"));
        let r = check(&h);
        assert_eq!(
            kinds(&h),
            vec![Kind::LostRead, Kind::ResetAfterLostRead],
            "{}",
            r.summary(10)
        );
        assert_eq!(r.findings[1].offsets, vec![3, 0]);
    }

    #[test]
    fn checker_tells_a_reread_across_a_kill_from_a_non_monotonic_poll() {
        let mut h = clean();
        // c3 read "d" at offset 2 of partition 0 before the kill -9 at 8 (as if before its
        // fsync), then, after the restart and the retry that wrote "d" there again, read it
        // again: a re-read across a kill.
        h.push(read(7, "c3", 1, 0, 2, "d"));
        h.push(read(20, "c3", 1, 0, 2, "d"));
        // c4 does the same with no kill between its two polls: still non-monotonic.
        h.push(read(13, "c4", 1, 0, 2, "d"));
        h.push(read(20, "c4", 1, 0, 2, "d"));
        let r = check(&h);
        assert_eq!(
            kinds(&h),
            vec![Kind::NonMonotonic, Kind::RereadAfterKill],
            "{}",
            r.summary(10)
        );
        assert!(r.findings[0].detail.contains("c4"), "{}", r.summary(10));
        assert!(r.findings[1].detail.contains("c3"), "{}", r.summary(10));
    }

    #[test]
    fn checker_judges_an_acknowledgement_without_an_offset_by_its_value() {
        let mut h = clean();
        // librdkafka's idempotent producer acknowledges "a" again without an offset (-1001):
        // it is in the final log, so nothing is wrong; "z" is acknowledged so and is not.
        h.push(ack(12, "p1", 0, -1001, "a"));
        h.push(send(3, "p1", true, 0, "z"));
        h.push(ack(12, "p1", 0, -1001, "z"));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::LostAcknowledged], "{}", r.summary(10));
        assert!(r.findings[0].detail.contains("\"z\""), "{}", r.summary(10));
    }

    #[test]
    fn checker_finds_a_non_monotonic_poll() {
        let mut h = clean();
        // c1 goes back to offset 1 within session 1.
        h.push(read(20, "c1", 1, 0, 1, "b"));
        let r = check(&h);
        assert_eq!(kinds(&h), vec![Kind::NonMonotonic], "{}", r.summary(10));
        assert_eq!(r.findings[0].offsets, vec![2, 1]);
    }

    #[test]
    fn checker_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        let h = clean();
        write_history(&path, &h).expect("write");
        assert_eq!(read_history(&path).expect("read"), h);
        std::fs::write(&path, "{\"type\":\"ack\"}\n").expect("write");
        let err = read_history(&path).expect_err("a bad line");
        assert!(err.contains("line 1"), "{err}");
    }
}
