//! model.device = "cuda" with the onnxruntime-gpu library of `make setup GPU=1`. A process loads one ONNX
//! Runtime, so this file (its own test binary) holds the only test that loads the GPU build.
//!
//! - Without that library: skipped, with a message (CI never sets GPU=1; the CPU library's "no CUDA provider"
//!   error is tested in src/embed/tests.rs).
//! - With it, on a machine without an NVIDIA GPU and driver: the CUDA provider cannot start, and that is one
//!   line, not a quiet CPU fallback.
//! - With it, on a GPU machine: CUDA and CPU sessions of the same model agree (cosine > 0.9999 per text).

use coltrast::embed::{cosine, EncoderOptions, OrtEncoder};
use coltrast::settings::{ModelDevice, Settings};

#[test]
fn cuda_provider_starts_on_a_gpu_and_says_why_not_elsewhere() {
    let s = Settings {
        model: coltrast::settings::ModelSettings { device: ModelDevice::Cuda, ..Default::default() },
        ..Default::default()
    };
    let lib = s.ort_library_path();
    if !lib.is_file() {
        eprintln!(
            "SKIP cuda_provider_starts_on_a_gpu_and_says_why_not_elsewhere: no {} (make setup GPU=1)",
            lib.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    coltrast_testkit::tiny::write_tiny_model(&tmp.path().join("model"));
    let onnx = tmp.path().join("onnx");
    coltrast::onnx::export_sentence_model(&tmp.path().join("model"), &onnx.join("model.onnx")).unwrap();
    let texts = ["which model reads chest X-rays?", "a", "late interaction over token embeddings"];
    let cpu = OrtEncoder::load_with(&onnx, &lib, EncoderOptions { intra_threads: 1, ..Default::default() }).unwrap();
    let want = cpu.embed(&texts).unwrap();

    let gpu = std::path::Path::new("/dev/nvidia0").exists();
    let cuda = OrtEncoder::load_with(&onnx, &lib, EncoderOptions { device: ModelDevice::Cuda, ..Default::default() });
    match (gpu, cuda) {
        (true, Ok(enc)) => {
            let got = enc.embed(&texts).unwrap();
            for i in 0..texts.len() {
                let c = cosine(got.row(i), want.row(i));
                assert!(c > 0.9999, "text {i}: cosine CUDA vs CPU {c}");
            }
        }
        (true, Err(e)) => panic!("a GPU is here but the CUDA provider did not start: {e}"),
        (false, Ok(_)) => panic!("no GPU here, yet a CUDA session was made: a silent fallback?"),
        (false, Err(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("CUDA execution provider cannot start") && !msg.contains('\n'), "{msg}");
            assert_eq!(e.exit_code(), 1);
        }
    }
}
