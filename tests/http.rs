//! The engine seam outside the server, without libtorch: the Ray worker (`coltrast worker embed`) embeds with
//! the engine it is given. The served project's routes, errors, batching, swaps, shutdown and fuzzing (on the
//! tiny pipeline, which needs libtorch) are in torch/tests/http.rs.

use coltrast_testkit::tiny::*;
use coltrast_testkit::*;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The Ray worker (`coltrast worker embed`) runs the engine it is told (the settings' `model.engine`, resolved on
/// its own CPU): OpenVINO's shard output matches ONNX Runtime's.
#[test]
fn the_worker_embeds_with_the_engine_it_is_given() {
    let ov = coltrast::settings::Settings::default().openvino_library_path();
    if !ov.exists() {
        eprintln!("SKIP the_worker_embeds_with_the_engine_it_is_given: no OpenVINO at {} (make setup)", ov.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_model(&tmp.path().join("model"));
    let onnx = tmp.path().join("onnx");
    coltrast::onnx::export_sentence_model(&tmp.path().join("model"), &onnx.join("model.onnx")).unwrap();
    let texts = ["Alpha detects tumors", "Gamma trades coins", "x"];
    let shard = tmp.path().join("s.texts.parquet");
    coltrast::executor::shard::write_texts(&shard, &texts).unwrap();
    let run = |engine: &str, out: &str| {
        let o = std::process::Command::new(bin())
            .args(["worker", "embed", "--model"])
            .arg(&onnx)
            .arg("--shard")
            .arg(&shard)
            .arg("--output")
            .arg(tmp.path().join(out))
            .args(["--threads", "1", "--engine", engine, "--precision", "f32"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{engine}: {}", String::from_utf8_lossy(&o.stderr));
        coltrast::executor::shard::read_output(&tmp.path().join(out), &texts, 32, 32).unwrap()
    };
    let a = run("onnxruntime", "a.parquet");
    let b = run("openvino", "b.parquet");
    for i in 0..texts.len() {
        let (x, y) = (&a.embeddings[i * 32..(i + 1) * 32], &b.embeddings[i * 32..(i + 1) * 32]);
        let c =
            cosine(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &y.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(c > 0.9999, "text {i}: cosine {c}");
    }
    assert_eq!(a.tokens.iter().map(Vec::len).collect::<Vec<_>>(), b.tokens.iter().map(Vec::len).collect::<Vec<_>>());
    // a wrong engine name is one clear line
    let o = std::process::Command::new(bin())
        .args(["worker", "embed", "--model", "m", "--shard", "s", "--output", "o", "--engine", "tensorrt"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--engine") && err.contains("tensorrt"), "{err}");
}
