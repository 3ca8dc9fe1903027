//! Progress bars for long work (indicatif, on stderr; hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// The training bar: epoch, step, the latest losses (total, contrastive, late) and steps per second.
pub fn train_bar(total_steps: u64) -> ProgressBar {
    let pb = ProgressBar::new(total_steps);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>11} [{bar:24}] step {pos}/{len} {msg} {per_sec} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}
