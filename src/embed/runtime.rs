//! Loading ONNX Runtime: one environment per process, from an explicit library path.
//!
//! What: `ort` is built with `load-dynamic`, so libonnxruntime.so is opened at run time. Without a path it
//! panics ("dlopen failed"); here the path is checked first and every failure (missing file, not a
//! library, wrong version, a panic inside `ort`) becomes an [`Error`] that tells the user to run
//! `make setup`.
//!
//! Inputs: the library path (`Settings::ort_library_path()`); for [`use_device`], `model.device`.
//! Outputs: a shared [`ort::environment::Environment`]; later calls reuse it (a different path after the
//! first successful load is ignored with a warning: a process can load one ONNX Runtime). [`use_device`]
//! puts a session on the CUDA execution provider, or fails with one line saying why it cannot: this library
//! has no CUDA provider, or the provider cannot start (no GPU, no driver, a CUDA library missing). ONNX
//! Runtime's own habit, a logged error and a quiet fall back to the CPU, is never used.
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
use ort::session::builder::SessionBuilder;

use crate::error::{Error, Result};
use crate::settings::ModelDevice;

/// The ONNX Runtime API version this build speaks (ort's `api-31`; `make setup` installs 1.31.1).
pub const ORT_VERSION: &str = "1.31";

static ENV: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn setup_hint(lib: &Path, what: &str) -> Error {
    Error::Usage(format!(
        "{}: {what}; run `make setup` (`make setup GPU=1` for model.device = \"cuda\") to install ONNX Runtime \
         1.31 there, or point model.ort_library (COLTRAST_MODEL__ORT_LIBRARY) at a libonnxruntime.so 1.31",
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

/// Where `make setup GPU=1` links the CUDA and cuDNN libraries of the venv, beside libonnxruntime.so.
pub const CUDA_LIB_LINK: &str = "cuda-lib";
pub const CUDNN_LIB_LINK: &str = "cudnn-lib";

static PRELOADED: Mutex<bool> = Mutex::new(false);

/// Load the CUDA and cuDNN libraries that the CUDA execution provider needs from the links beside `lib`, when
/// setup made them (a library installed elsewhere relies on the system's search path instead). Once loaded,
/// the provider's own dependencies resolve to them by soname, with no LD_LIBRARY_PATH.
fn preload_cuda_libraries(lib: &Path) -> Result<()> {
    let mut done = PRELOADED.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let dir = lib.parent().unwrap_or(Path::new("."));
    let (cuda, cudnn) = (dir.join(CUDA_LIB_LINK), dir.join(CUDNN_LIB_LINK));
    let cuda = cuda.is_dir().then_some(cuda);
    let cudnn = cudnn.is_dir().then_some(cudnn);
    if cuda.is_some() || cudnn.is_some() {
        ort::ep::cuda::preload_dylibs(cuda.as_deref(), cudnn.as_deref()).map_err(|e| {
            Error::Usage(format!(
                "model.device = \"cuda\": {}: {}; run `make setup GPU=1` again",
                dir.display(),
                one_line(&e.to_string())
            ))
        })?;
    }
    *done = true;
    Ok(())
}

/// Put the session on `device`. `lib` is the library the environment came from (for the messages and the
/// preloaded CUDA libraries).
pub fn use_device(builder: SessionBuilder, device: ModelDevice, lib: &Path) -> Result<SessionBuilder> {
    use ort::ep::{ExecutionProvider, CUDA};
    match device {
        ModelDevice::Cpu => Ok(builder),
        ModelDevice::Cuda => {
            if !CUDA::is_available().unwrap_or(false) {
                return Err(Error::Usage(format!(
                    "model.device = \"cuda\": {} has no CUDA execution provider (a CPU-only ONNX Runtime); run \
                     `make setup GPU=1` and leave model.ort_library empty, or set model.device = \"cpu\"",
                    lib.display()
                )));
            }
            preload_cuda_libraries(lib)?;
            builder.with_execution_providers([CUDA::default().with_device_id(0).build().error_on_failure()]).map_err(
                |e| {
                    Error::Usage(format!(
                        "model.device = \"cuda\": ONNX Runtime's CUDA execution provider cannot start ({}); \
                         is there an NVIDIA GPU and driver? Or set model.device = \"cpu\"",
                        one_line(&e.to_string())
                    ))
                },
            )
        }
    }
}

/// ONNX Runtime's messages can span lines; errors here are one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `ort` errors carry non-Send builders; keep only their text.
pub(crate) fn ort_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("ONNX Runtime: {context}: {e}"))
}
