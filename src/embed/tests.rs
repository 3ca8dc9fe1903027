use super::*;
use crate::onnx::testutil::{openvino_lib, ort_lib, write_tiny_model};
use crate::settings::{ModelDevice, ModelEngine, Precision};

#[test]
fn batches_respect_the_token_budget() {
    // lengths sorted longest first
    let lens = [256, 250, 40, 40, 30, 10, 10, 3];
    let b = plan_batches(&lens, 512, 256);
    assert_eq!(b, vec![0..2, 2..5, 5..8]);
    for r in &b {
        assert!(r.len() * lens[r.start] <= 512 || r.len() == 1);
    }
    // padding: a text waits for a batch of its own length class once it would be padded by more than
    // max(16, longest / 8) tokens
    assert_eq!(plan_batches(&[256, 200, 40, 24, 23], 8192, 256), vec![0..1, 1..2, 2..4, 4..5]);
    assert_eq!(plan_batches(&[256, 224, 223], 8192, 256), vec![0..2, 2..3]);
    assert_eq!(plan_batches(&[20, 12, 4, 3], 8192, 256), vec![0..3, 3..4]);
    for lens in [vec![256usize, 200, 180, 150, 90, 60, 60, 59, 12, 3], (1..=300).rev().collect()] {
        for r in plan_batches(&lens, 8192, 256) {
            let w = lens[r.start];
            assert!(lens[r.clone()].iter().all(|&l| w - l <= PAD_SLACK_TOKENS.max(w / 8)), "{r:?}");
        }
    }
    // an item longer than the budget still gets a batch of its own
    assert_eq!(plan_batches(&[300, 5], 100, 8), vec![0..1, 1..2]);
    // the batch-size cap
    assert_eq!(plan_batches(&[2; 7], 1000, 3), vec![0..3, 3..6, 6..7]);
    assert!(plan_batches(&[], 100, 8).is_empty());
    // everything is covered exactly once
    let lens: Vec<usize> = (1..=100).rev().collect();
    let b = plan_batches(&lens, 8192, 256);
    assert_eq!(b.iter().map(|r| r.len()).sum::<usize>(), 100);
    assert!(b.windows(2).all(|w| w[0].end == w[1].start));
}

#[test]
fn diff_and_cosine() {
    assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
    assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f32::INFINITY);
    assert_eq!(max_abs_diff(&[f32::NAN], &[0.0]), f32::INFINITY);
    assert_eq!(max_abs_diff(&[], &[]), 0.0);
    assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
}

#[test]
fn parity_report_names_the_worst_sentence() {
    let got = Embeddings { dim: 2, data: vec![1.0, 0.0, 0.0, 1.0] };
    let reference = vec![vec![1.0, 0.0], vec![0.0, 0.999]];
    let r = ParityReport::compare(&["good", "off"], &got, &reference).unwrap();
    assert!((r.max_abs_diff - 0.001).abs() < 1e-6);
    assert!(r.min_cosine > 0.9999);
    assert!(r.passes(1e-2));
    let e = r.check(PARITY_TOLERANCE).unwrap_err().to_string();
    assert!(e.contains("\"off\"") && e.contains("max abs diff"), "{e}");
    assert!(ParityReport::compare(&["x"], &got, &reference).is_err());
}

#[test]
fn embeddings_rows() {
    let e = Embeddings { dim: 3, data: (0..6).map(|x| x as f32).collect() };
    assert_eq!(e.len(), 2);
    assert_eq!(e.row(1), &[3.0, 4.0, 5.0]);
    assert_eq!(e.rows().count(), 2);
    assert!(Embeddings { dim: 3, data: vec![] }.is_empty());
}

#[test]
fn missing_ort_library_is_a_clear_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("no-such-dir").join("libonnxruntime.so");
    let e = OrtEncoder::load(tmp.path(), &lib, 1).err().expect("must fail");
    let msg = e.to_string();
    assert!(msg.contains("libonnxruntime.so") && msg.contains("make setup"), "{msg}");
    assert!(msg.contains("no-such-dir"), "the message names the path: {msg}");
    assert_eq!(e.exit_code(), 1);
    // a directory is not a library either
    let e = runtime::environment(tmp.path()).err().expect("must fail").to_string();
    assert!(e.contains("make setup"), "{e}");
}

#[test]
fn missing_onnx_dir_or_bad_model_is_an_error_with_the_path() {
    let Some(lib) = ort_lib("missing_onnx_dir_or_bad_model_is_an_error_with_the_path") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let e = OrtEncoder::load(&tmp.path().join("nothing"), &lib, 1).err().expect("must fail").to_string();
    assert!(e.contains("nothing") && e.contains("onnx_model.json"), "{e}");

    // a model file that is not ONNX
    let src = tmp.path().join("model");
    write_tiny_model(&src, false, false, 5);
    let onnx = tmp.path().join("onnx");
    crate::onnx::export_sentence_model(&src, &onnx.join("model.onnx")).unwrap();
    std::fs::write(onnx.join("model.onnx"), b"garbage").unwrap();
    let e = OrtEncoder::load(&onnx, &lib, 1).err().expect("must fail").to_string();
    assert!(e.contains(&onnx.join("model.onnx").display().to_string()), "{e}");
}

#[test]
fn encoder_reports_dims_and_handles_odd_inputs() {
    let Some(lib) = ort_lib("encoder_reports_dims_and_handles_odd_inputs") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, false, 9);
    let onnx = tmp.path().join("onnx");
    crate::onnx::export_sentence_model(&src, &onnx.join("model.onnx")).unwrap();
    let enc = OrtEncoder::load(&onnx, &lib, 1).unwrap();
    assert_eq!((enc.dim(), enc.token_dim(), enc.max_seq_length()), (16, 32, 24));
    // empty text → [CLS] [SEP]; whitespace-only likewise
    let e = enc.embed(&["", "   ", "the model"]).unwrap();
    assert_eq!(e.len(), 3);
    for r in e.rows() {
        let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5 && r.iter().all(|x| x.is_finite()));
    }
    assert!(max_abs_diff(e.row(0), e.row(1)) < 1e-6);
    let t = enc.embed_tokens(&[""]).unwrap();
    assert_eq!(t[0].ids.len(), 2);
    assert!(enc.run_batch(&[], &["sentence_embedding"]).is_err());
    let too_long = vec![5u32; 25];
    assert!(enc.run_batch(&[&too_long], &["sentence_embedding"]).is_err());
}

#[test]
fn cuda_on_a_cpu_only_library_is_one_line_not_a_fallback() {
    let Some(lib) = ort_lib("cuda_on_a_cpu_only_library_is_one_line_not_a_fallback") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, false, 9);
    let onnx = tmp.path().join("onnx");
    crate::onnx::export_sentence_model(&src, &onnx.join("model.onnx")).unwrap();
    let opts = EncoderOptions { intra_threads: 1, device: crate::settings::ModelDevice::Cuda, ..Default::default() };
    let e = OrtEncoder::load_with(&onnx, &lib, opts).err().expect("the CPU build of ONNX Runtime has no CUDA provider");
    let msg = e.to_string();
    assert!(msg.contains("has no CUDA execution provider") && msg.contains("make setup GPU=1"), "{msg}");
    assert!(msg.contains(&lib.display().to_string()) && !msg.contains('\n'), "{msg}");
    assert_eq!(e.exit_code(), 1);
    // The same library and model on the CPU load fine.
    let cpu = EncoderOptions { intra_threads: 1, ..Default::default() };
    assert_eq!(OrtEncoder::load_with(&onnx, &lib, cpu).unwrap().embed(&["a"]).unwrap().len(), 1);
}

#[test]
fn auto_engine_follows_the_cpu_and_the_installed_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("libopenvino_c.so");
    let absent = tmp.path().join("none.so");
    std::fs::write(&lib, b"").unwrap();
    let ov = |p| Engine::OpenVino { library: lib.clone(), precision: p, by_auto: true };
    let named = |p| Engine::OpenVino { library: lib.clone(), precision: p, by_auto: false };
    let r = |e, p, d, l: &std::path::Path, bf16| Engine::resolve(e, p, d, l.to_path_buf(), bf16);
    // auto: OpenVINO in bf16 only where the CPU computes bf16 and the runtime is there
    assert_eq!(r(ModelEngine::Auto, Precision::Auto, ModelDevice::Cpu, &lib, true), ov(Precision::Bf16));
    assert_eq!(r(ModelEngine::Auto, Precision::Auto, ModelDevice::Cpu, &lib, false), Engine::OnnxRuntime);
    assert_eq!(r(ModelEngine::Auto, Precision::Auto, ModelDevice::Cpu, &absent, true), Engine::OnnxRuntime);
    assert_eq!(r(ModelEngine::Auto, Precision::Auto, ModelDevice::Cuda, &lib, true), Engine::OnnxRuntime);
    assert_eq!(r(ModelEngine::Auto, Precision::F32, ModelDevice::Cpu, &lib, true), ov(Precision::F32));
    // asked for by name: no CPU test (OpenVINO itself falls back to f32 where bf16 is not native)
    assert_eq!(r(ModelEngine::Openvino, Precision::Auto, ModelDevice::Cpu, &lib, false), named(Precision::F32));
    assert_eq!(r(ModelEngine::Openvino, Precision::Bf16, ModelDevice::Cpu, &lib, false), named(Precision::Bf16));
    assert_eq!(r(ModelEngine::Onnxruntime, Precision::Auto, ModelDevice::Cpu, &lib, true), Engine::OnnxRuntime);
    let flags = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n";
    assert!(!cpuinfo_has_native_bf16(flags));
    assert!(cpuinfo_has_native_bf16(&flags.replace("avx512_vnni", "avx512_vnni avx512_bf16")));
    assert!(cpuinfo_has_native_bf16(&flags.replace("avx2", "amx_tile amx_bf16 avx2")));
    assert!(!cpuinfo_has_native_bf16("flags : avx512_bf16x\n"));
}

#[test]
fn openvino_engine_matches_onnx_runtime() {
    let Some(lib) = ort_lib("openvino_engine_matches_onnx_runtime") else { return };
    let Some(ov_lib) = openvino_lib("openvino_engine_matches_onnx_runtime") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, false, 9);
    let onnx = tmp.path().join("onnx");
    crate::onnx::export_sentence_model(&src, &onnx.join("model.onnx")).unwrap();
    let texts = ["", "the model", "a longer text about late interaction and token embeddings", "x y z"];
    let ort_enc = OrtEncoder::load(&onnx, &lib, 1).unwrap();
    assert_eq!((ort_enc.engine(), ort_enc.computes_in()), ("onnxruntime", "f32"));
    let (want, want_tok) = ort_enc.embed_both(&texts).unwrap();
    for (precision, min_cos) in [(Precision::F32, 0.9999f32), (Precision::Bf16, 0.999)] {
        let engine = Engine::OpenVino { library: ov_lib.clone(), precision, by_auto: false };
        // a wrong ONNX Runtime path does not matter: OpenVINO does not load it
        let opts = EncoderOptions { intra_threads: 1, engine, ..Default::default() };
        let enc = OrtEncoder::load_with(&onnx, &tmp.path().join("no-ort.so"), opts).unwrap();
        assert_eq!(enc.engine(), "openvino");
        // bf16 is what the CPU does natively or not at all: f32 is reported where it falls back
        let computes = enc.computes_in().to_string();
        assert!(computes == "f32" || (precision == Precision::Bf16 && computes == "bf16"), "{computes}");
        let (got, got_tok) = enc.embed_both(&texts).unwrap();
        for i in 0..texts.len() {
            let c = cosine(got.row(i), want.row(i));
            assert!(c >= min_cos, "{precision:?} text {i}: cosine {c}");
            assert_eq!(got_tok[i].ids, want_tok[i].ids);
            assert_eq!(got_tok[i].data.len(), want_tok[i].data.len());
        }
        assert!(enc.run_batch(&[], &["sentence_embedding"]).is_err());
    }
}

#[test]
fn missing_openvino_library_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, false, 9);
    let onnx = tmp.path().join("onnx");
    crate::onnx::export_sentence_model(&src, &onnx.join("model.onnx")).unwrap();
    let missing = tmp.path().join("nowhere").join("libopenvino_c.so");
    let engine = Engine::OpenVino { library: missing.clone(), precision: Precision::F32, by_auto: false };
    let opts = EncoderOptions { engine, ..Default::default() };
    let e = OrtEncoder::load_with(&onnx, &tmp.path().join("no-ort.so"), opts).err().expect("must fail").to_string();
    assert!(e.contains(&missing.display().to_string()) && e.contains("make setup") && !e.contains('\n'), "{e}");
}

#[test]
fn the_int8_export_stays_on_onnx_runtime_under_auto_and_is_refused_by_name() {
    let Some(lib) = ort_lib("the_int8_export_stays_on_onnx_runtime_under_auto_and_is_refused_by_name") else { return };
    let Some(ov_lib) = openvino_lib("the_int8_export_stays_on_onnx_runtime_under_auto_and_is_refused_by_name") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, false, 9);
    let onnx = tmp.path().join("onnx");
    let int8 = crate::onnx::ExportOptions { quantize: crate::onnx::Quantize::Int8, ..Default::default() };
    crate::onnx::export_sentence_model_with(&src, &onnx.join("model.onnx"), &int8).unwrap();
    let load = |by_auto| {
        let engine = Engine::OpenVino { library: ov_lib.clone(), precision: Precision::F32, by_auto };
        OrtEncoder::load_with(&onnx, &lib, EncoderOptions { intra_threads: 1, engine, ..Default::default() })
    };
    let enc = load(true).unwrap();
    assert_eq!((enc.engine(), enc.computes_in()), ("onnxruntime", "int8 (dynamic, MatMuls)"));
    assert_eq!(enc.embed(&["the model"]).unwrap().len(), 1);
    let e = load(false).err().expect("OpenVINO by name on the int8 export").to_string();
    assert!(e.contains("cannot run the int8 export") && e.contains("model.onnx") && !e.contains('\n'), "{e}");
}
