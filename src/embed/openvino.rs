//! The OpenVINO engine behind the encoder seam: the same exported ONNX model, read by OpenVINO's ONNX frontend
//! and compiled for its CPU plugin (`model.engine = "openvino"`).
//!
//! What: load `libopenvino_c` (the runtime `make setup` copies out of the PyPI `openvino` wheel), compile the
//! model with an inference precision (`f32`, or `bf16` where the CPU computes it natively: AMX or
//! AVX-512 BF16), and run padded int64 batches, returning the same [`OutputTensor`]s as ONNX Runtime.
//!
//! Inputs: the model file, the library path, a thread count and a [`Precision`].
//!
//! Outputs: [`OvSession::run`]'s float outputs, and [`OvSession::precision`]: what OpenVINO says it computes
//! in once compiled (it is not always what was asked: a CPU without bf16 support computes in f32).

use std::path::Path;

use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, PropertyKey, RwPropertyKey, Shape, Tensor};

use super::encoder::OutputTensor;
use crate::error::{Error, Result};
use crate::settings::Precision;

fn ov_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("OpenVINO: {what}: {e}"))
}

/// Loads `libopenvino_c` once per process (the first path wins, as with ONNX Runtime's library).
fn load_library(library: &Path) -> Result<()> {
    if !library.exists() {
        return Err(Error::Usage(format!(
            "{}: missing (model.openvino_library; `make setup` installs the OpenVINO runtime there)",
            library.display()
        )));
    }
    openvino_sys::library::load_from(library.to_path_buf())
        .map_err(|e| Error::Usage(format!("{}: OpenVINO cannot be loaded: {e}", library.display())))
}

/// One compiled model and its infer request. Not `Sync` by itself: the encoder keeps it in a mutex, as it
/// keeps the ONNX Runtime session (OpenVINO parallelises inside a request).
pub struct OvSession {
    // the compiled model must outlive its request; the core outlives both
    request: InferRequest,
    _compiled: CompiledModel,
    _core: Core,
    precision: Precision,
    version: String,
}

impl OvSession {
    /// Compile `model_path` (ONNX) for the CPU with `threads` (0: OpenVINO's default) and `precision`
    /// (`Precision::Auto` is resolved by the caller; here it means OpenVINO's own default).
    pub fn load(library: &Path, model_path: &Path, threads: usize, precision: Precision) -> Result<OvSession> {
        load_library(library)?;
        let mut core = Core::new().map_err(|e| ov_err("creating the core", e))?;
        let cpu = DeviceType::CPU;
        let hint = match precision {
            Precision::F32 => Some("f32"),
            Precision::Bf16 => Some("bf16"),
            Precision::Auto => None,
        };
        if let Some(h) = hint {
            core.set_property(&cpu, &RwPropertyKey::HintInferencePrecision, h)
                .map_err(|e| ov_err("INFERENCE_PRECISION_HINT", e))?;
        }
        if threads > 0 {
            core.set_property(&cpu, &RwPropertyKey::InferenceNumThreads, &threads.to_string())
                .map_err(|e| ov_err("INFERENCE_NUM_THREADS", e))?;
        }
        // one request at a time, as fast as possible (not throughput streams)
        core.set_property(&cpu, &RwPropertyKey::HintPerformanceMode, "LATENCY")
            .map_err(|e| ov_err("PERFORMANCE_HINT", e))?;
        let path = model_path
            .to_str()
            .ok_or_else(|| Error::data(model_path, "path", "OpenVINO needs a UTF-8 path".to_string()))?;
        let model = core.read_model_from_file(path, "").map_err(|e| {
            Error::data(model_path, "ONNX model", format!("OpenVINO cannot read it: {e} (re-export it)"))
        })?;
        let mut compiled = core
            .compile_model(&model, DeviceType::CPU)
            .map_err(|e| Error::data(model_path, "ONNX model", format!("OpenVINO cannot compile it: {e}")))?;
        let got = compiled
            .get_property(&PropertyKey::Rw(RwPropertyKey::HintInferencePrecision))
            .map_err(|e| ov_err("reading INFERENCE_PRECISION_HINT", e))?
            .to_ascii_lowercase();
        let precision = match got.as_str() {
            "bf16" => Precision::Bf16,
            "f32" => Precision::F32,
            other => return Err(ov_err("compiled model", format!("unexpected inference precision {other:?}"))),
        };
        let request = compiled.create_infer_request().map_err(|e| ov_err("creating an infer request", e))?;
        let version = openvino::version().build_number;
        Ok(OvSession { request, _compiled: compiled, _core: core, precision, version })
    }

    /// What the compiled model computes in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// OpenVINO's build number (e.g. "2026.4.1-…").
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Run one padded batch (`[b, width]` int64 inputs by name) and return the named float outputs.
    pub fn run(
        &mut self,
        inputs: &[(&str, &[i64])],
        b: usize,
        width: usize,
        outputs: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let shape = Shape::new(&[b as i64, width as i64]).map_err(|e| ov_err("shape", e))?;
        for (name, data) in inputs {
            let mut t = Tensor::new(ElementType::I64, &shape).map_err(|e| ov_err(name, e))?;
            t.get_data_mut::<i64>().map_err(|e| ov_err(name, e))?.copy_from_slice(data);
            self.request.set_tensor(name, &t).map_err(|e| ov_err(&format!("input {name}"), e))?;
        }
        self.request.infer().map_err(|e| ov_err("infer", e))?;
        let mut out = Vec::with_capacity(outputs.len());
        for name in outputs {
            let t = self.request.get_tensor(name).map_err(|e| ov_err(&format!("output {name}"), e))?;
            let shape = t.get_shape().map_err(|e| ov_err(&format!("output {name}"), e))?;
            let data = t.get_data::<f32>().map_err(|e| ov_err(&format!("output {name}"), e))?;
            out.push(OutputTensor {
                name: name.to_string(),
                shape: shape.get_dimensions().iter().map(|&d| d as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}
