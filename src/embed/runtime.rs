//! Loading ONNX Runtime: one environment per process, from an explicit library path.
//!
//! What: `ort` is built with `load-dynamic`, so libonnxruntime.so is opened at run time. Without a path it
//! panics ("dlopen failed"); here the path is checked first and every failure (missing file, not a
//! library, wrong version, a panic inside `ort`) becomes an [`Error`] that tells the user to run
//! `make setup`.
//!
//! Inputs: the library path (`Settings::ort_library_path()`).
//! Outputs: a shared [`ort::environment::Environment`]; later calls reuse it (a different path after the
//! first successful load is ignored with a warning: a process can load one ONNX Runtime).
//!
//! Example:
//! ```no_run
//! let env = coltrast::embed::runtime::environment(std::path::Path::new("/opt/ort/libonnxruntime.so"))?;
//! # let _ = env;
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use crate::error::{Error, Result};

static ENV: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn setup_hint(lib: &Path, what: &str) -> Error {
    Error::Usage(format!(
        "{}: {what}; run `make setup` to install ONNX Runtime 1.31 there, or point model.ort_library \
         (COLTRAST_MODEL__ORT_LIBRARY) at a libonnxruntime.so 1.31",
        lib.display()
    ))
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

/// The process-wide ONNX Runtime environment, loading the library from `lib` on first use.
pub fn environment(lib: &Path) -> Result<Environment> {
    if !lib.is_file() {
        return Err(setup_hint(lib, "ONNX Runtime library not found"));
    }
    let mut slot = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = slot.as_ref() {
        let same = std::fs::canonicalize(lib).ok() == std::fs::canonicalize(loaded).ok();
        if !same {
            tracing::warn!("ONNX Runtime is already loaded from {}; ignoring {}", loaded.display(), lib.display());
        }
        return Ok(env.clone());
    }
    let builder = match catch_unwind(|| ort::init_from(lib)) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(setup_hint(lib, &format!("cannot load ONNX Runtime ({e})"))),
        Err(p) => return Err(setup_hint(lib, &format!("cannot load ONNX Runtime ({})", panic_text(p)))),
    };
    let env = match catch_unwind(AssertUnwindSafe(|| builder.with_name("coltrast").build())) {
        Ok(Ok(env)) => env,
        Ok(Err(e)) => return Err(setup_hint(lib, &format!("cannot start ONNX Runtime ({e})"))),
        Err(p) => return Err(setup_hint(lib, &format!("cannot start ONNX Runtime ({})", panic_text(p)))),
    };
    *slot = Some((lib.to_path_buf(), env.clone()));
    Ok(env)
}

/// `ort` errors carry non-Send builders; keep only their text.
pub(crate) fn ort_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("ONNX Runtime: {context}: {e}"))
}
