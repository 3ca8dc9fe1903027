//! train.device on this machine and build: "cuda" without the CUDA build or without a GPU fails before any
//! stage runs, with one line saying which; "auto" logs what it chose; the binary links libtorch_cuda exactly
//! when built with the `cuda` feature (`make build GPU=1`). `make test GPU=1` runs these same tests on the CUDA
//! build, where the other branch of each assertion is taken.

use std::process::Command;

use coltrast_testkit::tiny::*;
use coltrast_testkit::*;

fn gpu_here() -> bool {
    tch::Cuda::is_available()
}

#[test]
fn train_device_cuda_without_build_or_gpu_fails_before_anything_runs() {
    if coltrast_torch::CUDA_BUILT && gpu_here() {
        eprintln!(
            "SKIP train_device_cuda_without_build_or_gpu_fails_before_anything_runs: a CUDA build on a GPU \
                   machine trains on CUDA (scripts/gpu_check.sh checks that)"
        );
        return;
    }
    let p = tiny_project("epochs = 1");
    for args in [&["run", "--set", "train.device=cuda"][..], &["run", "train", "--set", "train.device=cuda"]] {
        let out = p.run(args);
        assert_eq!(out.code(), 1, "{}", out.stderr());
        let err = out.stderr();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        let want = if coltrast_torch::CUDA_BUILT { "libtorch sees no CUDA device" } else { "built without CUDA" };
        assert!(err.contains("train.device = \"cuda\"") && err.contains(want), "expected {want:?} in {err}");
        // Nothing ran: not even ingest, which comes first.
        assert!(!p.path().join("artifacts/ingest").exists(), "a stage ran before the device check");
    }
}

#[test]
fn train_device_auto_logs_its_choice() {
    let p = tiny_project("epochs = 1");
    let out = p.run(&["run", "train", "--set", "train.device=auto"]).ok();
    let err = out.stderr();
    let want = match (coltrast_torch::CUDA_BUILT, gpu_here()) {
        (false, _) => "train: on cpu (train.device = \"auto\"; this build has no CUDA",
        (true, false) => "train: on cpu (train.device = \"auto\"; libtorch sees no CUDA device)",
        (true, true) => "train: on cuda:0 (train.device = \"auto\"; libtorch sees a CUDA device)",
    };
    assert!(err.contains(want), "expected {want:?} in {err}");
    // The fingerprint holds the device "auto" resolved to.
    let dirs = trusted_dirs(&p.path().join("artifacts"), "train");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dirs[0].join("manifest.json")).unwrap()).unwrap();
    let device = if gpu_here() { "cuda" } else { "cpu" };
    assert_eq!(m["settings"]["device"], device, "{}", m["settings"]);
}

#[test]
fn binary_links_libtorch_cuda_exactly_with_the_cuda_feature() {
    let Ok(out) = Command::new("readelf").arg("-d").arg(bin()).output() else {
        eprintln!("SKIP binary_links_libtorch_cuda_exactly_with_the_cuda_feature: no readelf (binutils)");
        return;
    };
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(dynamic.contains("[libtorch_cpu.so]"), "readelf -d {}: {dynamic}", bin().display());
    let cuda = dynamic.contains("[libtorch_cuda.so]");
    assert_eq!(
        cuda,
        coltrast_torch::CUDA_BUILT,
        "{} {} libtorch_cuda.so, built {} the cuda feature",
        bin().display(),
        if cuda { "needs" } else { "does not need" },
        if coltrast_torch::CUDA_BUILT { "with" } else { "without" }
    );
}
