//! The train stage and the ColTrast library: step 0 equals the base model, gradients reach the encoder,
//! resume after kill -9, determinism and early stopping (on a tiny random BERT written as a real model dir,
//! so the whole pipeline runs in seconds), and the sample dataset with the real MiniLM, checked against
//! sentence-transformers when Python has it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use coltrast_testkit::tiny::*;
use coltrast_testkit::*;
use coltrast_torch::encoder::{Encoder, TransformerModel};
use coltrast_torch::train::{self, export, ColTrastModel, Example, TrainConfig};
use tch::Device;

/// libtorch's dropout (and tch's initialisation of fresh variables, even before they are overwritten) draw
/// from one process-wide generator: every in-process use of libtorch in these tests takes this lock, so that a
/// training run that must be reproducible never shares the generator with another test's thread.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn train_dir(p: &Project) -> PathBuf {
    let dirs = trusted_dirs(&p.path().join("artifacts"), "train");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn tiny_encoder() -> (tempfile::TempDir, Encoder) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path());
    let enc = Encoder::load(dir.path(), Device::Cpu).unwrap();
    (dir, enc)
}

fn tiny_examples() -> Vec<Example> {
    QA.iter()
        .enumerate()
        .map(|(i, (p, q, a))| {
            let others: Vec<String> = TOPICS.iter().filter(|t| t.0 != *p).map(|t| t.2[i % 5].to_string()).collect();
            Example {
                qa_id: format!("{p}/{i}"),
                query: q.to_string(),
                positive: a.to_string(),
                negatives: others,
                teacher: vec![],
            }
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig::from(&coltrast::settings::TrainSettings { batch_size: 4, ..Default::default() })
}

// ---------------------------------------------------------------------------------------------------------
// Library level

#[test]
fn step_0_embeds_exactly_as_the_base_model() {
    let _rng = rng_lock();
    let dir = coltrast::settings::cache_dir().join("models/all-MiniLM-L6-v2");
    let (enc, base) = if dir.join("model.safetensors").is_file() {
        (Encoder::load(&dir, Device::Cpu).unwrap(), Encoder::load(&dir, Device::Cpu).unwrap())
    } else {
        eprintln!("SKIP real model: {} missing (make setup); using the tiny model", dir.display());
        (tiny_encoder().1, tiny_encoder().1)
    };
    let texts = ["What AI model is used for medical diagnosis?", "ResNet-50 on chest X-rays.", "a"];
    let want = base.embed(&texts, 8).unwrap();
    let model = ColTrastModel::new(enc, base.dim(), 128, 42, &[]).unwrap();
    let got = train::tensor_rows(&model.embed(&texts, 8).unwrap()).unwrap();
    for (i, row) in got.iter().enumerate() {
        let diff = row.iter().zip(want.row(i)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-6, "text {i}: max abs diff {diff}");
    }
    // A wider head ([I; 0]) gives the same cosines.
    let wide = ColTrastModel::new(tiny_encoder().1, 40, 8, 1, &[]).unwrap();
    let (_, tiny_base) = tiny_encoder();
    let w = train::tensor_rows(&wide.embed(&texts, 8).unwrap()).unwrap();
    let b = tiny_base.embed(&texts, 8).unwrap();
    for (i, row) in w.iter().enumerate() {
        assert_eq!(row.len(), 40);
        let diff = row[..32].iter().zip(b.row(i)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-6 && row[32..].iter().all(|x| *x == 0.0));
    }
}

#[test]
fn gradients_reach_the_encoder_from_both_losses() {
    let _rng = rng_lock();
    let examples = tiny_examples();
    let refs: Vec<&Example> = examples.iter().take(4).collect();
    for (wc, wl) in [(1.0, 0.0), (0.0, 1.0)] {
        let (_d, enc) = tiny_encoder();
        let model = ColTrastModel::new(enc, 32, 16, 3, &[]).unwrap();
        let texts = train::Texts::new(&model, &[&examples]).unwrap();
        let cfg = TrainConfig { contrastive_weight: wc, late_interaction_weight: wl, ..config() };
        let loss = train::batch_loss(&model, &texts, &refs, &cfg, true).unwrap();
        loss.total.backward();
        let grad_norm = |name: &str| {
            let (_, t) = model.named_parameters().into_iter().find(|(n, _)| n == name).unwrap();
            let g = t.grad();
            if g.defined() {
                g.norm().double_value(&[])
            } else {
                0.0
            }
        };
        for name in [
            "encoder.embeddings.word_embeddings.weight",
            "encoder.encoder.layer.0.attention.self.query.weight",
            "encoder.encoder.layer.1.output.dense.weight",
        ] {
            assert!(grad_norm(name) > 0.0, "no gradient on {name} with weights ({wc}, {wl})");
        }
        let (dense, head) = (grad_norm("dense.linear.weight"), grad_norm("token_head.weight"));
        if wc > 0.0 {
            assert!(dense > 0.0 && head == 0.0, "contrastive only: dense {dense}, token head {head}");
        } else {
            assert!(dense == 0.0 && head > 0.0, "late only: dense {dense}, token head {head}");
        }
    }
}

#[test]
fn dropout_only_in_training_mode() {
    let _rng = rng_lock();
    let (_d, enc) = tiny_encoder();
    let model = ColTrastModel::new(enc, 32, 16, 3, &[]).unwrap();
    let examples = tiny_examples();
    let texts = train::Texts::new(&model, &[&examples]).unwrap();
    let b = texts.batch(&[examples[0].query.as_str(), examples[1].query.as_str()], Device::Cpu).unwrap();
    let same = |x: &tch::Tensor, y: &tch::Tensor| (x - y).abs().max().double_value(&[]) == 0.0;
    let _g = tch::no_grad_guard();
    assert!(same(&model.encode(&b, false).pooled, &model.encode(&b, false).pooled));
    assert!(!same(&model.encode(&b, true).pooled, &model.encode(&b, true).pooled));
}

#[test]
fn library_resume_matches_an_uninterrupted_run() {
    let _rng = rng_lock();
    // Train 3 epochs; separately train 2, then resume to 3 from the same work dir: identical weights.
    let examples = tiny_examples();
    let (tr, val) = examples.split_at(8);
    let cfg = TrainConfig { epochs: 3, patience: 0, learning_rate: 1e-3, ..config() };
    let run = |work: &Path, epochs: u64| {
        let (_d, enc) = tiny_encoder();
        let mut model = ColTrastModel::new(enc, 32, 16, 3, &[]).unwrap();
        let c = TrainConfig { epochs, ..cfg.clone() };
        let out = train::train(&c, &mut model, tr, val, work, &train::Hooks::default()).unwrap();
        (model.snapshot(), out)
    };
    let a = tempfile::tempdir().unwrap();
    let (full, out_full) = run(a.path(), 3);
    let b = tempfile::tempdir().unwrap();
    // A first process stopped after epoch 2 of a 3-epoch run: simulate it with a fault hook that panics.
    {
        let (_d, enc) = tiny_encoder();
        let mut model = ColTrastModel::new(enc, 32, 16, 3, &[]).unwrap();
        let stop = |p: &str| {
            if p == "epoch-2" {
                panic!("interrupted");
            }
        };
        let hooks = train::Hooks { fault_point: &stop, progress: false };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            train::train(&cfg, &mut model, tr, val, b.path(), &hooks)
        }));
        assert!(r.is_err());
    }
    let (resumed, out_resumed) = run(b.path(), 3);
    assert_eq!(out_resumed.resumed_after, Some(2));
    assert_eq!(out_full.log, out_resumed.log);
    assert_eq!(out_full.best_epoch, out_resumed.best_epoch);
    for ((n1, t1), (n2, t2)) in full.iter().zip(&resumed) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2), "{n1} differs after resume");
    }
}

/// The tiny model with dropout off, so that a step is a deterministic function of the weights.
fn tiny_encoder_without_dropout() -> (tempfile::TempDir, Encoder) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path());
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let enc = Encoder::load(dir.path(), Device::Cpu).unwrap();
    (dir, enc)
}

#[test]
fn micro_batched_steps_have_the_same_losses_and_gradients() {
    let _rng = rng_lock();
    let examples = tiny_examples();
    let refs: Vec<&Example> = examples.iter().take(6).collect();
    let (_d, enc) = tiny_encoder_without_dropout();
    let model = ColTrastModel::new(enc, 32, 16, 3, &[]).unwrap();
    let texts = train::Texts::new(&model, &[&examples]).unwrap();
    let act = train::memory::ActivationModel::new(model.encoder().config(), model.token_dim());
    let params: Vec<tch::Tensor> = model.named_parameters().into_iter().map(|(_, t)| t).collect();
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    let step =
        |cfg: &TrainConfig| train::gradcache::step_gradients(&model, &texts, &refs, cfg, &act, &params, 1).unwrap();
    // Today's step: the whole batch in one pass with autograd.
    let whole = step(&TrainConfig { max_activation_mb: 0, micro_batch_size: 0, ..config() });
    assert_eq!(whole.groups, 2);
    // Docs of this batch: 6 positives + their negatives; budgets that force 2..n groups.
    let tiny_budget = TrainConfig { max_activation_mb: 1, ..config() };
    // (config, whether some groups are encoded twice, whether some keep their first-pass graph)
    for (cfg, recompute, keep) in [
        (TrainConfig { micro_batch_size: 1, max_activation_mb: 0, ..config() }, true, false),
        (TrainConfig { micro_batch_size: 2, max_activation_mb: 0, ..config() }, true, false),
        (TrainConfig { micro_batch_size: 5, max_activation_mb: 0, ..config() }, true, false),
        (TrainConfig { micro_batch_size: 2, max_activation_mb: 512, ..config() }, false, true),
        (tiny_budget.clone(), true, true),
    ] {
        let got = step(&cfg);
        let label = format!("micro_batch_size {} max_activation_mb {}", cfg.micro_batch_size, cfg.max_activation_mb);
        assert!(got.groups > 2, "{label}: the batch must really be split ({} passes)", got.groups);
        assert_eq!(got.recomputed > 0, recompute, "{label}: {} of {} groups recomputed", got.recomputed, got.groups);
        assert_eq!(
            got.recomputed < got.groups,
            keep,
            "{label}: {} of {} groups recomputed",
            got.recomputed,
            got.groups
        );
        for (a, b, what) in [
            (whole.losses.0, got.losses.0, "total"),
            (whole.losses.1, got.losses.1, "contrastive"),
            (whole.losses.2, got.losses.2, "late"),
        ] {
            assert!((a - b).abs() < 1e-5, "{label}: {what} loss {a} vs {b}");
        }
        let mut checked = 0;
        for ((name, g1), g2) in names.iter().zip(&whole.grads).zip(&got.grads) {
            assert_eq!(g1.defined(), g2.defined(), "{label}: {name}");
            if !g1.defined() {
                continue;
            }
            let scale = g1.abs().max().double_value(&[]).max(1e-8);
            let diff = (g1 - g2).abs().max().double_value(&[]);
            assert!(diff <= 1e-4 * scale + 1e-7, "{label}: {name}: max |diff| {diff} (max |g| {scale})");
            checked += 1;
        }
        assert!(checked > 10, "{label}: only {checked} gradients compared");
    }
    // The gradients are not trivially equal: another batch gives other ones.
    let other: Vec<&Example> = examples.iter().skip(6).take(6).collect();
    let cfg = TrainConfig { max_activation_mb: 0, ..config() };
    let g_other = train::gradcache::step_gradients(&model, &texts, &other, &cfg, &act, &params, 1).unwrap();
    let w = names.iter().position(|n| n == "encoder.encoder.layer.0.attention.self.query.weight").unwrap();
    assert!((&whole.grads[w] - &g_other.grads[w]).abs().max().double_value(&[]) > 1e-6);
}

#[test]
fn micro_batched_passes_draw_the_same_dropout_masks() {
    // GradCache's pass without autograd and its pass with autograd must see the same dropout masks, or the
    // cached gradient belongs to other representations than the ones it is pushed through.
    let _rng = rng_lock();
    let (_d, enc) = tiny_encoder();
    let model = ColTrastModel::new(enc, 32, 16, 3, &[]).unwrap();
    let examples = tiny_examples();
    let refs: Vec<&Example> = examples.iter().take(6).collect();
    let texts = train::Texts::new(&model, &[&examples]).unwrap();
    let act = train::memory::ActivationModel::new(model.encoder().config(), model.token_dim());
    let params: Vec<tch::Tensor> = model.named_parameters().into_iter().map(|(_, t)| t).collect();
    let cfg = TrainConfig { micro_batch_size: 2, max_activation_mb: 0, ..config() };
    let a = train::gradcache::step_gradients(&model, &texts, &refs, &cfg, &act, &params, 7).unwrap();
    let b = train::gradcache::step_gradients(&model, &texts, &refs, &cfg, &act, &params, 7).unwrap();
    let c = train::gradcache::step_gradients(&model, &texts, &refs, &cfg, &act, &params, 8).unwrap();
    assert!(a.groups > 2);
    assert_eq!(a.losses, b.losses, "same step, same masks");
    assert_ne!(a.losses, c.losses, "another step draws other masks (dropout is on)");
    for (x, y) in a.grads.iter().zip(&b.grads) {
        assert_eq!(x.defined(), y.defined());
        if x.defined() {
            assert!(x.equal(y));
        }
    }
    let queries: Vec<&str> = refs.iter().map(|e| e.query.as_str()).collect();
    let grouping = train::memory::group_texts(
        &queries.iter().map(|q| texts.get(q).unwrap().len()).collect::<Vec<_>>(),
        &act,
        0.0,
        2,
    );
    let seeds = [11i64, 12, 13];
    let without = {
        let _g = tch::no_grad_guard();
        train::gradcache::encode_groups(&model, &texts, &queries, &grouping, true, Some(&seeds)).unwrap()
    };
    let with = train::gradcache::encode_groups(&model, &texts, &queries, &grouping, true, Some(&seeds)).unwrap();
    assert!(with.pooled.requires_grad());
    assert!(without.pooled.equal(&with.pooled.detach()), "pooled vectors differ between the two passes");
    assert!(without.tokens.equal(&with.tokens.detach()), "token vectors differ between the two passes");
    // And the rows come back in input order: encoding the first query alone gives its row.
    let _g = tch::no_grad_guard();
    let alone = model.encode(&texts.batch(&queries[..1], Device::Cpu).unwrap(), false).pooled;
    let all = train::gradcache::encode_groups(&model, &texts, &queries, &grouping, false, None).unwrap();
    assert!((alone.get(0) - all.pooled.get(0)).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn a_run_over_the_memory_limit_stops_with_one_line() {
    let p = tiny_project("epochs = 1\nmax_memory_mb = 1");
    let out = p.run(&["run", "train"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    let line = out.stderr().lines().find(|l| l.contains("needs about")).unwrap_or_default().to_string();
    assert!(line.contains("train.max_memory_mb allows 1"), "{}", out.stderr());
    assert!(line.contains("lower train.max_activation_mb (now 512)"), "{line}");
    assert!(trusted_dirs(&p.path().join("artifacts"), "train").is_empty(), "no train artifact may be trusted");
    // Raising the allowance lets the same run through, and the manifest says where the memory went.
    let out = p.run(&["run", "train", "--set", "train.max_memory_mb=0"]).ok();
    assert!(out.stages().contains(&"train ran".to_string()), "{:?}", out.stages());
    let m = manifest(&train_dir(&p));
    let s = &m["stats"];
    for key in ["peak_rss_mb", "weights_mb", "optimizer_state_mb", "activations_estimate_mb", "checkpoint_peak_mb"] {
        assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {s}");
    }
    assert!(s["peak_rss_mb"].as_f64() >= s["steps_peak_mb"].as_f64());
    let (opt, w) = (s["optimizer_state_mb"].as_f64().unwrap(), s["weights_mb"].as_f64().unwrap());
    assert!((opt - 2.0 * w).abs() < 0.003, "AdamW holds two moments per weight: {opt} vs {w}");
}

// ---------------------------------------------------------------------------------------------------------
// Through the binary, on the tiny model

fn start_paused_train(p: &Project, point: &str) -> std::process::Child {
    start_paused(p, &["run", "train"], point)
}

const RESUME_TOML: &str = "epochs = 4\npatience = 0\nlearning_rate = 0.001";

#[test]
fn kill_9_then_rerun_resumes_and_matches_an_uninterrupted_run() {
    let clean = tiny_project(RESUME_TOML);
    clean.run(&["run", "train"]).ok();
    let clean_dir = train_dir(&clean);
    // Determinism: a second project with the same fingerprint gets the same bytes.
    let again = tiny_project(RESUME_TOML);
    again.run(&["run", "train"]).ok();
    assert_eq!(train_dir(&again).file_name(), clean_dir.file_name());
    assert_eq!(tree_bytes(&train_dir(&again)), tree_bytes(&clean_dir), "same fingerprint, different bytes");

    // 4 training pairs per epoch / batch 2... the tiny split has 8 train pairs: 4 steps per epoch.
    // step-11 is inside epoch 3 (epochs 1-2 committed), epoch-2 right after a commit, before-manifest after
    // training ended.
    for (point, resumed_after) in
        [("train:step-11", Some(2)), ("train:epoch-2", Some(2)), ("train:before-manifest", Some(4))]
    {
        let p = tiny_project(RESUME_TOML);
        let mut child = start_paused_train(&p, point);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(trusted_dirs(&p.path().join("artifacts"), "train").is_empty(), "{point}");
        let out = p.run(&["run", "train", "-v"]).ok();
        let err = out.stderr();
        if let Some(e) = resumed_after {
            assert!(err.contains(&format!("resuming after epoch {e}")), "{point}: {err}");
        }
        let dir = train_dir(&p);
        assert_eq!(dir.file_name(), clean_dir.file_name());
        assert_eq!(tree_bytes(&dir), tree_bytes(&clean_dir), "{point}: resumed run differs from a clean run");
        // The scratch dir is gone after success.
        let work: Vec<_> = std::fs::read_dir(p.path().join("artifacts/train"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".work-"))
            .collect();
        assert!(work.is_empty(), "{point}: work dir left behind");
    }
}

#[test]
fn early_stopping_outputs_the_best_epoch() {
    // A high learning rate makes the tiny model overfit quickly; patience 2 then stops training.
    // base_mix = 0: the output is the best epoch's weights as trained (no averaging with the base).
    let p = tiny_project("epochs = 12\npatience = 2\nlearning_rate = 0.003\nwarmup_ratio = 0.0\nbase_mix = 0");
    p.run(&["run", "train"]).ok();
    let dir = train_dir(&p);
    let m = manifest(&dir);
    let log = coltrast_torch::train::stage::read_log(&dir).unwrap();
    let val: Vec<&train::LogRow> = log.iter().filter(|r| r.split == "val" && r.epoch > 0).collect();
    let best = val.iter().min_by(|a, b| a.loss.total_cmp(&b.loss)).unwrap();
    assert_eq!(m["stats"]["best_epoch"], best.epoch, "{m}");
    let run = m["stats"]["epochs_run"].as_u64().unwrap();
    assert_eq!(m["stats"]["stopped_early"], true, "the test needs a run that stops early: {:?}", val);
    assert_eq!(run, best.epoch + 2, "stops after patience epochs without improvement");
    assert!(val.iter().all(|r| r.epoch <= run));

    // The output model is the best epoch's: its validation loss is the logged best.
    let _rng = rng_lock();
    let (model, meta) = export::load_model_dir(&dir.join("model"), Device::Cpu).unwrap();
    assert_eq!(meta.maxsim_scale, 10.0);
    let pairs = coltrast::artifacts::pairs::read_pairs(&trusted_dirs(&p.path().join("artifacts"), "mine")[0]).unwrap();
    let (tr, va, _) = coltrast_torch::train::stage::split_pairs(&pairs);
    let settings = coltrast::settings::TrainSettings { batch_size: 2, ..Default::default() };
    let cfg = TrainConfig::from(&settings);
    let texts = train::Texts::new(&model, &[&tr, &va]).unwrap();
    let (loss, _, _) = train::evaluate(&model, &texts, &va, &cfg).unwrap();
    assert!((loss - best.loss).abs() < 1e-5, "output model val loss {loss}, best logged {}", best.loss);
}

/// Weight averaging: `base_mix = 1` gives back the base model's pooled embeddings; `"auto"` tries every share
/// of the grid on validation, records each one's MRR, and keeps the best.
#[test]
fn base_mix_averages_with_the_base_weights() {
    let texts = ["Alpha detects tumours in scans.", "Which coins does Gamma trade?", "a"];
    let p = tiny_project("epochs = 2\nlearning_rate = 0.003\nbase_mix = 1");
    p.run(&["run", "train"]).ok();
    let dir = train_dir(&p);
    let m = manifest(&dir);
    assert_eq!(m["stats"]["base_mix"], 1.0, "{m}");
    let _rng = rng_lock();
    let (model, _) = export::load_model_dir(&dir.join("model"), Device::Cpu).unwrap();
    let got = train::tensor_rows(&model.embed(&texts, 8).unwrap()).unwrap();
    let base = Encoder::load(&p.path().join("tiny-model"), Device::Cpu).unwrap().embed(&texts, 8).unwrap();
    for (i, row) in got.iter().enumerate() {
        let diff = row.iter().zip(base.row(i)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "text {i}: max abs diff {diff} to the base model");
    }
    drop(_rng);

    let p = tiny_project("epochs = 2\nlearning_rate = 0.003");
    p.run(&["run", "train"]).ok();
    let dir = train_dir(&p);
    let m = manifest(&dir);
    let chosen = m["stats"]["base_mix"].as_f64().unwrap();
    let tried: Vec<(f64, f64)> = coltrast::settings::BaseMix::GRID
        .iter()
        .map(|w| (*w, m["stats"][format!("val_mrr_base_mix_{w}")].as_f64().unwrap_or_else(|| panic!("{w}: {m}"))))
        .collect();
    let best = tried.iter().map(|t| t.1).fold(f64::MIN, f64::max);
    let at_chosen = tried.iter().find(|t| t.0 == chosen).unwrap().1;
    assert_eq!(at_chosen, best, "chose {chosen} of {tried:?}");
    // a share outside [0, 1] is refused before anything runs
    let out = p.run(&["run", "train", "--set", "train.base_mix=1.5"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("train.base_mix"), "{}", out.stderr());
}

#[test]
fn tiny_mpnet_trains_through_chunk_mine_and_train() {
    // The whole training path (ingest, chunk, mine, train) on a tiny random MPNet through the tch encoder.
    let p = tiny_mpnet_project("epochs = 2\nlearning_rate = 0.003\nbase_mix = 0");
    p.run(&["run", "train"]).ok();
    let dir = train_dir(&p);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "mpnet", "{cfg}");
    let log = coltrast_torch::train::stage::read_log(&dir).unwrap();
    let train_rows: Vec<_> = log.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train_rows.len(), 8, "2 epochs x 4 steps");
    assert!(log.iter().all(|r| r.loss.is_finite() && r.loss_contrastive.is_finite() && r.loss_late.is_finite()));

    let _rng = rng_lock();
    let (model, _) = export::load_model_dir(&dir.join("model"), Device::Cpu).unwrap();
    assert!(matches!(model.encoder().model(), TransformerModel::MPNet(_)));
    let base = Encoder::load(&p.path().join("tiny-model"), Device::Cpu).unwrap();
    let (trained, base) = (model.encoder().var_store().variables(), base.var_store().variables());
    // Training moved the MPNet-only relative position bias and the attention weights (base_mix = 0 keeps them).
    for name in ["encoder.relative_attention_bias.weight", "encoder.layer.0.attention.attn.q.weight"] {
        let moved = (&trained[name] - &base[name]).abs().max().double_value(&[]);
        assert!(moved > 1e-6, "{name} did not change in training ({moved})");
    }
    let texts = ["What does Alpha detect?", "Tumors in chest scans.", "a"];
    let got = train::tensor_rows(&model.embed(&texts, 8).unwrap()).unwrap();
    for row in got {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[test]
fn outputs_and_log_schema() {
    let p = tiny_project("epochs = 2");
    p.run(&["run", "train"]).ok();
    let dir = train_dir(&p);
    for f in [
        "train_log.parquet",
        "training_curves.png",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/modules.json",
        "model/sentence_bert_config.json",
        "model/1_Pooling/config.json",
        "model/2_Dense/config.json",
        "model/2_Dense/model.safetensors",
        "model/coltrast_token_head.safetensors",
        "model/coltrast.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(dir.join("model/3_Normalize").is_dir());
    let modules: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model/modules.json")).unwrap()).unwrap();
    let paths: Vec<&str> = modules.as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["", "1_Pooling", "2_Dense", "3_Normalize"]);
    let dense = tch::Tensor::read_safetensors(dir.join("model/2_Dense/model.safetensors")).unwrap();
    let mut names: Vec<(&str, Vec<i64>)> = dense.iter().map(|(n, t)| (n.as_str(), t.size())).collect();
    names.sort();
    assert_eq!(names, [("linear.bias", vec![32]), ("linear.weight", vec![32, 32])]);
    let head = tch::Tensor::read_safetensors(dir.join("model/coltrast_token_head.safetensors")).unwrap();
    let mut names: Vec<(&str, Vec<i64>)> = head.iter().map(|(n, t)| (n.as_str(), t.size())).collect();
    names.sort();
    assert_eq!(names, [("bias", vec![128]), ("weight", vec![128, 32])]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model/coltrast.json")).unwrap()).unwrap();
    for k in [
        "embedding_dim",
        "token_dim",
        "temperature",
        "contrastive_weight",
        "late_interaction_weight",
        "base_model_blake3",
        "maxsim_scale",
        "maxsim_shift",
    ] {
        assert!(meta.get(k).is_some(), "coltrast.json lacks {k}: {meta}");
    }
    let log = coltrast_torch::train::stage::read_log(&dir).unwrap();
    let steps = log.iter().filter(|r| r.split == "train").count();
    assert_eq!(steps, 8, "2 epochs x 4 steps");
    assert_eq!(log.iter().filter(|r| r.split == "val").count(), 3, "epochs 0, 1, 2");
    assert!(log.iter().filter(|r| r.split == "train").all(|r| r.lr.is_some() && r.grad_norm.is_some()));
    let m = manifest(&dir);
    assert_eq!(m["outputs"].as_array().unwrap().iter().find(|o| o["path"] == "train_log.parquet").unwrap()["rows"], 11);
    let png = std::fs::read(dir.join("training_curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // A setting changes only train; `status` says which.
    let st = p.run(&["status", "--set", "train.temperature=0.1"]).ok().stdout();
    assert!(st.contains("setting temperature: 0.05 -> 0.1"), "{st}");
    assert!(st.contains("mine     up to date"), "{st}");
}

#[test]
fn bad_train_settings_are_one_line_errors() {
    let p = Project::new("");
    for (set, expected) in [
        ("train.epochs=0", "train.epochs: expected an integer >= 1"),
        ("train.temperature=0", "train.temperature: expected a number in (0, 10]"),
        ("train.device=tpu", "unknown variant `tpu`"),
        ("train.token_dim=0", "train.token_dim: expected an integer >= 1"),
        ("train.max_activation_mb=-1", "train.max_activation_mb: expected an integer >= 0"),
        ("train.micro_batch_size=-2", "train.micro_batch_size: expected an integer >= 0"),
        ("train.max_memory_mb=-1", "train.max_memory_mb: expected an integer >= 0"),
    ] {
        let out = p.run(&["status", "--set", set]);
        assert_eq!(out.code(), 1, "{set}: {}", out.stderr());
        assert!(out.stderr().contains(expected), "{set}: {}", out.stderr());
    }
}

// ---------------------------------------------------------------------------------------------------------
// The sample dataset with the real model

/// A Python that can import sentence_transformers: $COLTRAST_PYTHON, the bench venv, or python3.
fn python_with_sentence_transformers() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("COLTRAST_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(coltrast::settings::cache_dir().join("bench-venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import sentence_transformers"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

#[test]
fn sample_trains_and_sentence_transformers_loads_the_model_dir() {
    let data = repo_root().join("data/ai_projects_dataset.json");
    let p = Project::new(&format!("[ingest]\npath = \"{}\"\n[train]\nepochs = 2\ndevice = \"cpu\"\n", data.display()));
    let out = p.run(&["run", "train"]).ok();
    assert_eq!(out.stages(), ["ingest ran", "chunk ran", "generate ran", "mine ran", "train ran"]);
    let dir = train_dir(&p);
    let m = manifest(&dir);
    assert_eq!(m["stats"]["train_pairs"], 12);
    assert_eq!(m["stats"]["val_pairs"], 6);
    for k in ["val_pairwise_acc_base", "val_pairwise_acc_trained", "val_top1_base", "val_top1_trained"] {
        assert!(m["stats"][k].is_number(), "{k} missing: {m}");
    }
    let log = coltrast_torch::train::stage::read_log(&dir).unwrap();
    let mean = |e: u64| {
        let v: Vec<f64> = log.iter().filter(|r| r.split == "train" && r.epoch == e).map(|r| r.loss).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(mean(2) < mean(1), "train loss did not fall: {} -> {}", mean(1), mean(2));

    let Some(python) = python_with_sentence_transformers() else {
        eprintln!("SKIP: no Python with sentence-transformers (set COLTRAST_PYTHON or run `make bench` once); the model dir was not loaded by sentence-transformers");
        return;
    };
    let texts = [
        "What AI model is used for medical diagnosis?",
        "The system uses a convolutional neural network trained on chest X-rays.",
        "How does the trading bot manage risk?",
        "short",
    ];
    let ours = {
        let _rng = rng_lock();
        let (model, _) = export::load_model_dir(&dir.join("model"), Device::Cpu).unwrap();
        train::tensor_rows(&model.embed(&texts, 4).unwrap()).unwrap()
    };
    let script = r#"
import json, sys
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.loads(sys.argv[2])
print(json.dumps(m.encode(texts, batch_size=4).tolist()))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, dir.join("model").to_str().unwrap(), &serde_json::to_string(&texts).unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "sentence-transformers failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let theirs: Vec<Vec<f32>> = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let mut min_cos = 1f32;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a.len(), b.len());
        let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
            / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt());
        assert!(cos >= 0.9999, "text {i}: cos {cos} between ours and sentence-transformers'");
        min_cos = min_cos.min(cos);
    }
    eprintln!(
        "sentence-transformers ({}) agrees with ours on {} texts: min cos {min_cos:.7}",
        python.display(),
        texts.len()
    );
}

#[test]
fn narrower_pooled_head_starts_from_principal_directions() {
    let _rng = rng_lock();
    let (_d, enc) = tiny_encoder();
    let examples = tiny_examples();
    let texts: Vec<&str> = examples.iter().flat_map(|e| [e.query.as_str(), e.positive.as_str()]).collect();
    let tokens = enc.tokenize(&texts).unwrap();
    let model = ColTrastModel::new(enc, 8, 16, 1, &tokens).unwrap();
    let (w, _) = model.dense();
    assert_eq!(w.size(), [8, 32]);
    // Orthonormal rows: W Wᵀ = I.
    let eye = tch::Tensor::eye(8, (tch::Kind::Float, Device::Cpu));
    let gram = w.matmul(&w.tr());
    assert!(gram.allclose(&eye, 1e-4, 1e-4, false), "{gram}");
    let e = train::tensor_rows(&model.embed(&texts, 8).unwrap()).unwrap();
    assert!(e.iter().all(|r| r.len() == 8 && (r.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4));
}

#[test]
fn without_validation_pairs_the_last_epoch_is_the_output() {
    let p = tiny_project("epochs = 2");
    let out = p.run(&["run", "train", "--set", "mine.val_split=0"]).ok();
    assert!(out.stderr().contains("no validation pairs"), "{}", out.stderr());
    let dir = train_dir(&p);
    let m = manifest(&dir);
    assert_eq!(m["stats"]["val_pairs"], 0);
    assert_eq!(m["stats"]["best_epoch"], 2);
    assert_eq!(m["stats"]["stopped_early"], false);
    let log = coltrast_torch::train::stage::read_log(&dir).unwrap();
    assert!(log.iter().all(|r| r.split == "train"));
    assert_eq!(log.len(), 12, "12 training pairs, batch 2, 2 epochs");
}
