//! Kafka's offset checkpoint format with one entry, the one owner of it: a partition keeps its
//! recovery point, its log start offset (DeleteRecords) and its cleaner position in such files.
//!
//! ```text
//! 0                      version
//! 1                      entries
//! <topic> <partition> <offset>
//! ```
//!
//! Writes replace the file atomically and durably, off the shard. A reader tells a missing file
//! from a damaged one, because callers treat them differently.

use std::io;
use std::path::Path;

use crate::io::FileSystem;

/// What an offset checkpoint file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Checkpoint {
    /// No such file.
    Missing,
    /// A file that does not parse (not version 0 with one entry ending in a number).
    Damaged,
    /// The offset of its entry.
    Offset(i64),
}

impl Checkpoint {
    /// The offset, if the file had one.
    pub(super) fn offset(self) -> Option<i64> {
        match self {
            Checkpoint::Offset(o) => Some(o),
            Checkpoint::Missing | Checkpoint::Damaged => None,
        }
    }
}

/// Replaces `dir/name` with a one-entry checkpoint of `offset`, atomically and durably, off the
/// shard.
pub(super) async fn write_offset_checkpoint(
    fs: &FileSystem,
    dir: &Path,
    name: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> io::Result<()> {
    let text = format!("0\n1\n{topic} {partition} {offset}\n");
    fs.write_small_file_durable_off_shard(&dir.join(name), text.into_bytes())
        .await
}

/// Reads `dir/name`.
pub(super) fn read_offset_checkpoint(
    fs: &FileSystem,
    dir: &Path,
    name: &str,
) -> io::Result<Checkpoint> {
    let Some(bytes) = fs.read_small_file(&dir.join(name))? else {
        return Ok(Checkpoint::Missing);
    };
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

fn parse(text: &str) -> Checkpoint {
    let mut lines = text.lines();
    if lines.next() != Some("0") || lines.next() != Some("1") {
        return Checkpoint::Damaged;
    }
    lines
        .next()
        .and_then(|l| l.split_whitespace().last())
        .and_then(|o| o.parse::<i64>().ok())
        .map_or(Checkpoint::Damaged, Checkpoint::Offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafkas_one_entry_format() {
        assert_eq!(parse("0\n1\norders 3 42\n"), Checkpoint::Offset(42));
        assert_eq!(parse("0\n1\nmy topic.x 0 -1\n"), Checkpoint::Offset(-1));
        assert_eq!(parse("1\n1\norders 3 42\n"), Checkpoint::Damaged);
        assert_eq!(parse("0\n1\norders 3 x\n"), Checkpoint::Damaged);
        assert_eq!(parse(""), Checkpoint::Damaged);
    }
}
