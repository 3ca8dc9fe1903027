//! A tiny random BERT (2 layers, hidden 32) written as a real sentence-transformers model dir, and a small
//! dataset, so the whole pipeline runs in seconds in tests.
#![allow(dead_code)]

use std::path::Path;

use coltrast_torch::encoder::{toy_mpnet_tokenizer, toy_tokenizer, Encoder, ModelConfig};
use coltrast_torch::train::export;
use tch::Device;

use super::Project;

/// libtorch's dropout (and tch's initialisation of fresh variables, even before they are overwritten) draw
/// from one process-wide generator: every in-process use of libtorch here takes this lock, so that a
/// training run that must be reproducible never shares the generator with another test's thread.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------------------
// A tiny model and dataset

pub const TOPICS: &[(&str, &str, &[&str])] = &[
    (
        "alpha",
        "Alpha",
        &[
            "Alpha detects tumors in chest scans with a residual network.",
            "The scans come from three hospitals and are labelled by radiologists.",
            "Training uses augmented images and a weighted loss.",
            "Alpha reaches high recall on the test hospitals.",
            "The model runs on one GPU in under a second per scan.",
        ],
    ),
    (
        "beta",
        "Beta",
        &[
            "Beta classifies customer reviews as positive or negative.",
            "It fine-tunes a transformer on product reviews from an online store.",
            "Reviews are cleaned and split into sentences first.",
            "Beta reports accuracy and a confusion matrix per category.",
            "A small web service answers requests with the predicted sentiment.",
        ],
    ),
    (
        "gamma",
        "Gamma",
        &[
            "Gamma trades crypto coins with a reinforcement learning agent.",
            "The agent observes prices and order books every minute.",
            "Rewards are profits minus trading fees.",
            "Gamma was backtested on two years of market data.",
            "Risk limits stop the agent when losses grow too large.",
        ],
    ),
];

pub const QA: &[(&str, &str, &str)] = &[
    ("alpha", "What does Alpha detect?", "Tumors in chest scans."),
    ("alpha", "Where do the scans come from?", "Three hospitals."),
    ("alpha", "Which loss does training use?", "A weighted loss."),
    ("alpha", "How fast is the model?", "Under a second per scan."),
    ("beta", "What does Beta classify?", "Customer reviews."),
    ("beta", "Which model does Beta fine-tune?", "A transformer."),
    ("beta", "What does Beta report?", "Accuracy and a confusion matrix."),
    ("beta", "How are requests answered?", "By a small web service."),
    ("gamma", "What does Gamma trade?", "Crypto coins."),
    ("gamma", "What does the agent observe?", "Prices and order books."),
    ("gamma", "What are the rewards?", "Profits minus trading fees."),
    ("gamma", "What stops the agent?", "Risk limits."),
];

pub fn tiny_dataset() -> String {
    let projects: Vec<serde_json::Value> = TOPICS
        .iter()
        .map(|(id, title, sentences)| {
            let qa: Vec<serde_json::Value> = QA
                .iter()
                .filter(|(p, _, _)| p == id)
                .map(|(_, q, a)| serde_json::json!({"question": q, "answer": a, "context": ""}))
                .collect();
            serde_json::json!({
                "project_id": id,
                "readme_content": format!("# {title}\n\n{}", sentences.join(" ")),
                "qa_pairs": qa,
            })
        })
        .collect();
    serde_json::json!({ "projects": projects }).to_string()
}

pub fn tiny_vocab() -> Vec<String> {
    let mut words = std::collections::BTreeSet::new();
    let text = format!("{}", tiny_dataset());
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        if !w.is_empty() {
            words.insert(w.to_lowercase());
        }
    }
    for p in [".", "?", ",", "#", ":", "-"] {
        words.insert(p.to_string());
    }
    words.into_iter().collect()
}

/// A tiny random BERT (2 layers, hidden 32) saved as a sentence-transformers model dir.
pub fn write_tiny_model(dir: &Path) {
    let vocab = tiny_vocab();
    let refs: Vec<&str> = vocab.iter().map(|s| s.as_str()).collect();
    let tokenizer = toy_tokenizer(&refs).unwrap();
    let n = tokenizer.get_vocab_size(true) as i64;
    write_tiny(dir, ModelConfig::tiny(n), tokenizer, "BertModel");
}

/// A tiny random MPNet (2 layers, hidden 32, relative position bias, `<s>`/`</s>` tokenizer, pad id 1) saved as
/// a sentence-transformers model dir laid out as all-mpnet-base-v2's.
pub fn write_tiny_mpnet_model(dir: &Path) {
    let vocab = tiny_vocab();
    let refs: Vec<&str> = vocab.iter().map(|s| s.as_str()).collect();
    let tokenizer = toy_mpnet_tokenizer(&refs).unwrap();
    let n = tokenizer.get_vocab_size(true) as i64;
    write_tiny(dir, ModelConfig::tiny_mpnet(n), tokenizer, "MPNetForMaskedLM");
}

fn write_tiny(dir: &Path, config: ModelConfig, tokenizer: tokenizers::Tokenizer, class: &str) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let mut cfg = serde_json::to_value(&config).unwrap();
    cfg["architectures"] = serde_json::json!([class]);
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
    let enc = Encoder::random(config, tokenizer, 64, Device::Cpu, 11).unwrap();
    let mut vars: Vec<(String, tch::Tensor)> = enc.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    export::write_safetensors(&dir.join("model.safetensors"), &vars).unwrap();
    std::fs::write(dir.join("sentence_bert_config.json"), r#"{"max_seq_length": 64, "do_lower_case": false}"#).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
}

/// A project dir with the tiny dataset and model; `extra` is appended to pipeline.toml's [train].
pub fn tiny_project(train: &str) -> Project {
    tiny_project_with(train, write_tiny_model)
}

/// [`tiny_project`] on the tiny random MPNet instead of the tiny BERT.
pub fn tiny_mpnet_project(train: &str) -> Project {
    tiny_project_with(train, write_tiny_mpnet_model)
}

fn tiny_project_with(train: &str, write_model: fn(&Path)) -> Project {
    let p = Project::new(&format!(
        "[model]\nbase = \"tiny-model\"\nthreads = 1\n[ingest]\npath = \"data.json\"\n[chunk]\nmax_tokens = 64\n\
         [train]\ndevice = \"cpu\"\nbatch_size = 2\nteacher = \"none\"\n{train}\n"
    ));
    p.write("data.json", tiny_dataset());
    {
        let _rng = rng_lock();
        write_model(&p.path().join("tiny-model"));
    }
    p
}
