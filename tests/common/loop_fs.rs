//! A small ext4 file system in a file, loop-mounted for a test (needs root and loop devices).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd`; an error naming it and its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A `bytes`-byte ext4 image at `DIR/fs.img` mounted on `DIR/data`; unmounted and the image
/// removed when dropped.
pub struct LoopFs {
    /// Where the file system is mounted.
    pub mount: PathBuf,
    image: PathBuf,
}

impl LoopFs {
    /// Makes the image in `dir` (which must exist), formats it (no reserved blocks) and mounts it.
    pub fn make(dir: &Path, bytes: u64) -> Result<LoopFs, String> {
        let image = dir.join("fs.img");
        let mount = dir.join("data");
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(bytes).map_err(|e| e.to_string())?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))?;
        run(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&mount))?;
        Ok(LoopFs { mount, image })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("umount").arg(&self.mount)) {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
