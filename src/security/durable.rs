//! A small JSON file under the data dir, replaced atomically and durably through the `io`
//! seam (temp file, fsync, rename, directory fsync) on glommio's blocking pool; saves from
//! several shards are written newest-last by a generation number, so the file never goes
//! back to an older state.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One durable file; `path` `None`: memory only (unit tests), saves do nothing.
#[derive(Debug)]
pub struct DurableFile {
    path: Option<PathBuf>,
    /// The generation last written.
    written: Arc<Mutex<u64>>,
}

impl DurableFile {
    /// The file at `path`, or none.
    pub fn new(path: Option<PathBuf>) -> DurableFile {
        DurableFile {
            path,
            written: Arc::new(Mutex::new(0)),
        }
    }

    /// Reads the file: `None` if it does not exist (or there is no file).
    pub fn read(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        crate::io::FileSystem::Real { buffered: true }
            .read_small_file(path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The file's name, for messages.
    pub fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(memory)".into(), |p| p.display().to_string())
    }

    /// Writes `data`, the state at `generation`, unless a newer generation was already
    /// written. After `Ok`, a crash leaves this state or a newer one.
    pub async fn save(&self, generation: u64, data: Vec<u8>) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let written = self.written.clone();
        glommio::executor()
            .spawn_blocking(move || {
                let mut last = written.lock().unwrap_or_else(|p| p.into_inner());
                if *last >= generation && generation != 0 {
                    return Ok(());
                }
                let fs = crate::io::FileSystem::Real { buffered: true };
                if let Some(dir) = path.parent() {
                    fs.create_dir_all(dir)?;
                }
                fs.write_small_file_durable(&path, &data)?;
                *last = generation;
                Ok(())
            })
            .await
    }
}
