//! Small filesystem helpers: atomic writes (temp file + fsync + rename) and directory fsync.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Write `bytes` to `path` through a temporary sibling and a rename, so readers see the old or the new file,
/// never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir);
    Ok(())
}

/// fsync a directory so a rename inside it is durable. Best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// fsync every regular file under `dir`.
pub fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let p = entry.path();
        let ft = entry.file_type().at(&p)?;
        if ft.is_dir() {
            sync_tree(&p)?;
        } else if ft.is_file() {
            fs::File::open(&p).and_then(|f| f.sync_all()).at(&p)?;
        }
    }
    sync_dir(dir);
    Ok(())
}
