//! Benchmark helper for `make bench`: time per ColTrast training step of the tch trainer.
//!
//! Builds fixed batches of `train.batch_size` (8) training pairs from the sample's mined pairs (the epoch-1
//! order, wrapping around so every batch is full), writes them with their batch plans (documents, labels,
//! candidate masks, late-interaction pairs) and the initial token head to `DUMP_DIR`, so that the PyTorch
//! baseline (`bench/train_step.py`) runs exactly the same model, batches, sequence lengths and loss. Then
//! times `WARMUP + STEPS` steps (pad, forward with dropout, loss, backward, clip, AdamW) and prints one JSON
//! line: per-step milliseconds, the mean time of each phase, threads, padded lengths, and the loss of the
//! first batch without dropout (which both sides must agree on). Each batch is also stepped a second time by the
//! bounded step (`gradcache::step_gradients` with `train.max_activation_mb`, default or `MAX_ACTIVATION_MB`),
//! alternating which of the two goes first, and its times, groups and recomputed groups are reported as well.
//!
//! `cargo run --release --example train_step_bench -- MODEL_DIR MINE_ARTIFACT_DIR DUMP_DIR STEPS WARMUP`

use std::time::Instant;

use coltrast::settings::TrainSettings;
use coltrast_torch::train::{self, optim::AdamW, BatchPlan, ColTrastModel, Example, TrainConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6 || args.len() == 7,
        "usage: train_step_bench MODEL_DIR MINE_DIR DUMP_DIR STEPS WARMUP [MAX_ACTIVATION_MB]"
    );
    let (model_dir, mine_dir, dump) = (&args[1], &args[2], std::path::Path::new(&args[3]));
    let steps: usize = args[4].parse()?;
    let warmup: usize = args[5].parse()?;
    std::fs::create_dir_all(dump)?;
    let pairs = coltrast::artifacts::pairs::read_pairs(std::path::Path::new(mine_dir))?;
    let (train_set, _, _) = coltrast_torch::train::stage::split_pairs(&pairs);
    anyhow::ensure!(!train_set.is_empty(), "no training pairs in {mine_dir}");
    let settings = TrainSettings::default();
    let cfg = TrainConfig::from(&settings);
    // The bounded step (GradCache when a batch exceeds the budget), timed on the same batches.
    let bounded_cfg = TrainConfig {
        max_activation_mb: match args.get(6) {
            Some(v) => v.parse()?,
            None => cfg.max_activation_mb,
        },
        ..cfg.clone()
    };
    let encoder = coltrast_torch::encoder::Encoder::load(std::path::Path::new(model_dir), tch::Device::Cpu)?;
    let hidden = encoder.dim();
    let model = ColTrastModel::new(encoder, hidden, settings.token_dim as usize, cfg.seed, &[])?;
    let texts = train::Texts::new(&model, &[&train_set])?;

    let order = train::rng::epoch_order(cfg.seed, 1, train_set.len());
    let b = cfg.batch_size;
    let batches: Vec<Vec<&Example>> =
        (0..warmup + steps).map(|k| (0..b).map(|j| &train_set[order[(k * b + j) % order.len()]]).collect()).collect();

    // The batches as the PyTorch side needs them.
    let mut lens = Vec::new();
    let dumped: Vec<serde_json::Value> = batches
        .iter()
        .map(|batch| {
            let plan = BatchPlan::new(batch);
            let q: Vec<&str> = batch.iter().map(|e| e.query.as_str()).collect();
            let d: Vec<&str> = plan.docs.iter().map(|s| s.as_str()).collect();
            let len = |v: &[&str]| v.iter().map(|t| texts.get(t).map(|x| x.len()).unwrap_or(0)).max().unwrap_or(0);
            lens.push((len(&q), len(&d), d.len()));
            let n = plan.docs.len();
            let cand: Vec<Vec<bool>> = plan.candidates.chunks(n).map(|r| r.to_vec()).collect();
            serde_json::json!({
                "queries": q, "docs": d, "labels": plan.labels, "candidates": cand,
                "late_query": plan.late_query, "late_doc": plan.late_doc, "late_label": plan.late_label,
            })
        })
        .collect();
    let (tw, tb) = model.token_head();
    train::export::write_safetensors(
        &dump.join("token_head.safetensors"),
        &[("weight".into(), tw.shallow_clone()), ("bias".into(), tb.shallow_clone())],
    )?;

    // The first batch's loss without dropout: the two implementations must agree on it.
    let eval = {
        let _g = tch::no_grad_guard();
        let l = train::batch_loss(&model, &texts, &batches[0], &cfg, false)?;
        [l.total.double_value(&[]), l.contrastive.double_value(&[]), l.late.double_value(&[])]
    };
    let spec = serde_json::json!({
        "model_dir": model_dir, "max_seq_length": model.encoder().max_seq_length(),
        "threads": tch::get_num_threads(), "warmup": warmup, "steps": steps,
        "learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm,
        "temperature": cfg.temperature, "contrastive_weight": cfg.contrastive_weight,
        "late_interaction_weight": cfg.late_interaction_weight,
        "maxsim_scale": model.maxsim_affine().0, "maxsim_shift": model.maxsim_affine().1,
        "embedding_dim": model.embedding_dim(), "token_dim": model.token_dim(),
        "eval_loss_first_batch": eval, "batches": dumped,
    });
    std::fs::write(dump.join("batches.json"), serde_json::to_vec(&spec)?)?;

    tch::manual_seed(cfg.seed as i64);
    let mut opt = AdamW::new(model.named_parameters(), cfg.weight_decay);
    let act = train::memory::ActivationModel::new(model.encoder().config(), model.token_dim());
    let params = opt.parameters();
    let mut ms = Vec::new();
    let mut bounded_ms = Vec::new();
    let mut passes = Vec::new();
    let mut recomputed = Vec::new();
    let mut phases = [0f64; 4];
    for (k, batch) in batches.iter().enumerate() {
        // Bounded step first on odd batches, second on even ones (neither side always runs warm).
        let bounded = |opt: &mut AdamW| -> anyhow::Result<(f64, usize, usize)> {
            let t0 = Instant::now();
            let st =
                train::gradcache::step_gradients(&model, &texts, batch, &bounded_cfg, &act, &params, k as u64 + 1)?;
            let norm = train::optim::global_norm(&st.grads);
            opt.apply(&st.grads, train::optim::clip_coef(norm, cfg.max_grad_norm), cfg.learning_rate);
            Ok((t0.elapsed().as_secs_f64() * 1000.0, st.groups, st.recomputed))
        };
        if k % 2 == 1 {
            let (t, g, r) = bounded(&mut opt)?;
            bounded_ms.push(t);
            passes.push(g);
            recomputed.push(r);
        }
        let t0 = Instant::now();
        let l = train::batch_loss(&model, &texts, batch, &cfg, true)?;
        let _ = l.total.double_value(&[]);
        let t1 = Instant::now();
        let grads = opt.gradients(&l.total);
        let t2 = Instant::now();
        let norm = train::optim::global_norm(&grads);
        let t3 = Instant::now();
        opt.apply(&grads, train::optim::clip_coef(norm, cfg.max_grad_norm), cfg.learning_rate);
        let t4 = Instant::now();
        for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].iter().enumerate() {
            phases[i] += d.as_secs_f64() * 1000.0 / batches.len() as f64;
        }
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if k % 2 == 0 {
            let (t, g, r) = bounded(&mut opt)?;
            bounded_ms.push(t);
            passes.push(g);
            recomputed.push(r);
        }
    }
    eprintln!(
        "mean ms: forward+loss {:.0}, backward {:.0}, clip {:.0}, adamw {:.0}",
        phases[0], phases[1], phases[2], phases[3]
    );
    let timed = &ms[warmup..];
    let mut sorted = timed.to_vec();
    sorted.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "system": "coltrast (tch)", "threads": tch::get_num_threads(), "step_ms": timed,
        "median_ms": sorted[sorted.len() / 2], "padded_lengths": lens, "eval_loss_first_batch": eval,
        "phases_ms": {"forward_loss": phases[0], "backward": phases[1], "clip": phases[2], "optimizer": phases[3]},
        "bounded_max_activation_mb": bounded_cfg.max_activation_mb, "bounded_step_ms": &bounded_ms[warmup..],
        "bounded_passes": &passes[warmup..], "bounded_recomputed": &recomputed[warmup..],
    });
    println!("{out}");
    Ok(())
}
