//! Training checkpoints in the stage's working dir, written after every epoch.
//!
//! - `epoch-<e>.safetensors`: every parameter (named as [`super::model::ColTrastModel::named_parameters`])
//!   and AdamW's moments (`adam_m.*`, `adam_v.*`), written to a temporary file, fsynced and renamed.
//! - `checkpoint.json`: the commit point, replaced atomically: the epoch, the optimizer/scheduler step, the
//!   early-stopping state, the log so far, and the name and blake3 of the state file. The libtorch RNG is not
//!   stored: every epoch re-seeds it (and the shuffle) from `(seed, epoch)`, so the state to restore is the
//!   epoch number.
//!
//! The best epoch's state file is kept beside the latest one, so the best weights survive an interruption.
//! A checkpoint written for other settings or data (`key`) or whose state file does not hash to what the
//! JSON says is ignored with a warning, and training starts over.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::optim::EarlyStopping;
use super::LogRow;
use coltrast::error::{Error, IoContext, Result};
use coltrast::fsutil;

pub const META: &str = "checkpoint.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    /// Hash of the training configuration and data; a checkpoint for anything else is not resumed.
    pub key: String,
    /// Last completed epoch (1-based).
    pub epoch: u64,
    /// Updates done so far (AdamW's t and the schedule's position).
    pub global_step: u64,
    pub state_file: String,
    pub state_blake3: String,
    pub early: EarlyStopping,
    /// True when early stopping ended training at `epoch`.
    pub stopped: bool,
    pub log: Vec<LogRow>,
}

pub fn state_file_name(epoch: u64) -> String {
    format!("epoch-{epoch}.safetensors")
}

/// Writes `tensors` to `path` atomically (temporary sibling, fsync, rename). Returns the file's blake3.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<String> {
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous())).collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
    fs::File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    fsutil::sync_dir(dir);
    Ok(coltrast::hash::hash_file(path)?.0)
}

/// Reads every tensor of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(|e| Error::internal(format!("{}: {e}", path.display())))
}

/// Commits a checkpoint: `checkpoint.json` replaced atomically, then state files other than this one and
/// the best epoch's are removed.
pub fn commit(work_dir: &Path, ck: &Checkpoint) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(ck).map_err(Error::internal)?;
    fsutil::write_atomic(&work_dir.join(META), &bytes)?;
    let keep: Vec<String> =
        [Some(ck.epoch), ck.early.best_epoch].iter().flatten().map(|e| state_file_name(*e)).collect();
    for entry in fs::read_dir(work_dir).at(work_dir)? {
        let entry = entry.at(work_dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("epoch-") && name.ends_with(".safetensors") && !keep.contains(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The last committed checkpoint for `key`, if there is a usable one.
pub fn load(work_dir: &Path, key: &str) -> Option<(Checkpoint, PathBuf)> {
    let meta = work_dir.join(META);
    let bytes = fs::read(&meta).ok()?;
    let ck: Checkpoint = match serde_json::from_slice(&bytes) {
        Ok(ck) => ck,
        Err(e) => {
            tracing::warn!(path = %meta.display(), "unreadable checkpoint ({e}); training starts over");
            return None;
        }
    };
    if ck.format != FORMAT || ck.key != key {
        tracing::warn!(path = %meta.display(), "checkpoint is for other settings or data; training starts over");
        return None;
    }
    let state = work_dir.join(&ck.state_file);
    match coltrast::hash::hash_file(&state) {
        Ok((h, _)) if h == ck.state_blake3 => Some((ck, state)),
        _ => {
            tracing::warn!(path = %state.display(), "checkpoint state missing or damaged; training starts over");
            None
        }
    }
}

impl Checkpoint {
    pub fn new(key: &str, epoch: u64, global_step: u64, state_file: String, state_blake3: String) -> Self {
        Checkpoint {
            format: FORMAT,
            key: key.to_string(),
            epoch,
            global_step,
            state_file,
            state_blake3,
            early: EarlyStopping::new(0),
            stopped: false,
            log: Vec::new(),
        }
    }
}
