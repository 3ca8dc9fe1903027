//! Helper of `scripts/gpu_check.sh`: CPU against CUDA. Prints Markdown for bench/results/gpu.md.
//!
//! - `gpu_check device`: what libtorch sees (`cuda_built`, `cuda_available`, `devices`), one line.
//! - `gpu_check losses CPU_TRAIN_DIR CUDA_TRAIN_DIR`: per-epoch mean losses of two train artifacts side by side
//!   with the tolerances of `coltrast::devcheck`, then `losses: PASS` or `losses: FAIL (n rows)`.
//! - `gpu_check embed ONNX_DIR CORPUS_JSONL ORT_LIBRARY LIMIT DEVICES`: embeds the first LIMIT passages (`text`
//!   of each corpus.jsonl line; 0 = all) with ONNX Runtime on each of DEVICES (`cpu`, `cuda` or `cpu,cuda`),
//!   all from the one library (a process loads one ONNX Runtime; the GPU build also runs the CPU provider),
//!   after a warm-up batch, and prints passages/s per device and the cosine of CUDA to CPU per passage.
//!
//! `cargo run --release -p coltrast-torch --example gpu_check -- SUBCOMMAND ARGS...`

use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

mod devcheck;

use coltrast::embed::{EncoderOptions, OrtEncoder};
use coltrast::settings::ModelDevice;
use devcheck::{compare_losses, epoch_losses, CosineStats};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(|s| s.as_str()) {
        Some("device") => {
            let n = if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
            println!(
                "cuda_built={} cuda_available={} devices={n}",
                coltrast_torch::CUDA_BUILT,
                tch::Cuda::is_available()
            );
            Ok(())
        }
        Some("losses") if args.len() == 3 => losses(Path::new(&args[1]), Path::new(&args[2])),
        Some("embed") if args.len() == 6 => {
            embed(Path::new(&args[1]), Path::new(&args[2]), Path::new(&args[3]), args[4].parse()?, &args[5])
        }
        _ => anyhow::bail!(
            "usage: gpu_check device | losses CPU_TRAIN_DIR CUDA_TRAIN_DIR | embed ONNX_DIR CORPUS ORT_LIBRARY LIMIT DEVICES"
        ),
    }
}

fn losses(cpu_dir: &Path, cuda_dir: &Path) -> anyhow::Result<()> {
    let rows = compare_losses(&epoch_losses(cpu_dir)?, &epoch_losses(cuda_dir)?)?;
    println!("| split | epoch | CPU | CUDA | relative difference | tolerance | within |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.6} | {:.6} | {:.2e} | {} | {} |",
            r.split,
            r.epoch,
            r.cpu,
            r.cuda,
            r.rel_diff,
            r.tolerance,
            if r.ok { "yes" } else { "**no**" }
        );
    }
    let bad = rows.iter().filter(|r| !r.ok).count();
    println!();
    if bad == 0 {
        println!("losses: PASS");
    } else {
        println!("losses: FAIL ({bad} of {} rows outside tolerance)", rows.len());
    }
    Ok(())
}

fn embed(onnx: &Path, corpus: &Path, lib: &Path, limit: usize, devices: &str) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(corpus)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        texts.push(v["text"].as_str().unwrap_or_default().to_string());
        if limit > 0 && texts.len() >= limit {
            break;
        }
    }
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let mut results = Vec::new();
    println!("| ONNX Runtime on | passages | seconds | passages/s |");
    println!("|---|---|---|---|");
    for name in devices.split(',') {
        let device = match name {
            "cpu" => ModelDevice::Cpu,
            "cuda" => ModelDevice::Cuda,
            other => anyhow::bail!("unknown device {other:?}: cpu or cuda"),
        };
        let enc = OrtEncoder::load_with(onnx, lib, EncoderOptions { device, ..Default::default() })?;
        enc.embed(&refs[..refs.len().min(64)])?; // warm-up (CUDA: kernels, allocator)
        let t0 = Instant::now();
        let e = enc.embed(&refs)?;
        let s = t0.elapsed().as_secs_f64();
        println!("| {name} | {} | {s:.2} | {:.1} |", refs.len(), refs.len() as f64 / s);
        results.push((name.to_string(), e, s));
    }
    if let [(_, cpu, cpu_s), (_, cuda, cuda_s)] = &results[..] {
        let c = CosineStats::of(cpu, cuda)?;
        println!();
        println!(
            "CUDA against CPU: speed-up {:.2}x; cosine per passage: mean {:.7}, min {:.7} ({} passages)",
            cpu_s / cuda_s,
            c.mean,
            c.min,
            c.n
        );
    }
    Ok(())
}
