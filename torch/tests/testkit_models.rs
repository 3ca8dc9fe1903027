//! The testkit's pure-Rust tiny models against the tch encoder: each loads as a sentence-transformers dir, with
//! the config of `ModelConfig::tiny` / `tiny_mpnet`, the tokenizer of `toy_tokenizer` / `toy_mpnet_tokenizer`
//! over the same words, and exactly the weights `Encoder::random` draws for the same seed (every name, shape and
//! value); the export tests' wide BERT (without the heads the encoder does not run) loads too.

use coltrast_testkit::tiny::{vocabulary, Arch, TinyModel};
use coltrast_torch::encoder::{toy_mpnet_tokenizer, toy_tokenizer, Encoder, ModelConfig};
use tch::{Device, Kind};

const TEXTS: &[&str] = &[
    "What does Alpha detect?",
    "Tumors in chest scans.",
    "zzz 7 xyz, the embedding QUERY!",
    "Risk limits stop the agent when losses grow too large.",
];

fn check(model: TinyModel) {
    let dir = tempfile::tempdir().unwrap();
    model.write(dir.path());
    let loaded = Encoder::load(dir.path(), Device::Cpu).unwrap();
    let words = vocabulary();
    let refs: Vec<&str> = words.iter().map(|w| w.as_str()).collect();
    let (toy, config) = match model.arch {
        Arch::Bert => (toy_tokenizer(&refs).unwrap(), ModelConfig::tiny(model.vocab_size() as i64)),
        Arch::MPNet => (toy_mpnet_tokenizer(&refs).unwrap(), ModelConfig::tiny_mpnet(model.vocab_size() as i64)),
    };
    assert_eq!(toy.get_vocab_size(true), model.vocab_size());
    assert_eq!(loaded.config(), &config);
    assert_eq!(loaded.max_seq_length(), model.max_seq_length);

    let random = Encoder::random(config, toy, model.max_seq_length, Device::Cpu, model.seed).unwrap();
    let got = loaded.tokenize(TEXTS).unwrap();
    let want = random.tokenize(TEXTS).unwrap();
    for ((g, w), text) in got.iter().zip(&want).zip(TEXTS) {
        assert_eq!(g.ids, w.ids, "token ids of {text:?}");
    }
    assert!(got[2].ids.contains(&(if model.arch == Arch::Bert { 1 } else { 3 })), "digits are unknown");

    let a = loaded.var_store().variables();
    let b = random.var_store().variables();
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    assert_eq!(names, {
        let mut n: Vec<&String> = b.keys().collect();
        n.sort();
        n
    });
    for name in names {
        let (x, y) = (&a[name], &b[name]);
        assert_eq!(x.size(), y.size(), "{name}");
        let diff = (x - y).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "{name}: the testkit's value differs from Encoder::random's by up to {diff}");
    }
    let emb_a = loaded.embed(TEXTS, 4).unwrap();
    let emb_b = random.embed(TEXTS, 4).unwrap();
    assert_eq!(emb_a.data, emb_b.data);
    let word = a["embeddings.word_embeddings.weight"].abs().sum(Kind::Float).double_value(&[]);
    assert!(word > 0.1, "random word embeddings, not zeros: {word}");
}

#[test]
fn the_tiny_bert_is_encoder_random_of_model_config_tiny() {
    check(TinyModel::bert());
    check(TinyModel { seed: 42, max_seq_length: 40, ..TinyModel::bert() });
}

#[test]
fn the_tiny_mpnet_is_encoder_random_of_model_config_tiny_mpnet() {
    check(TinyModel::mpnet());
    check(TinyModel { seed: 42, max_seq_length: 40, ..TinyModel::mpnet() });
}

#[test]
fn the_wide_bert_loads_in_the_tch_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::wide(false, false, 3);
    model.write(dir.path());
    let enc = Encoder::load(dir.path(), Device::Cpu).unwrap();
    // tokenizer.json says truncate at 8; the encoder uses max_seq_length
    assert_eq!(enc.max_seq_length(), model.max_seq_length);
    let long = "the model ".repeat(20);
    assert_eq!(enc.tokenize(&[long.as_str()]).unwrap()[0].ids.len(), model.max_seq_length);
    let emb = enc.embed(TEXTS, 4).unwrap();
    assert_eq!((emb.len(), emb.dim), (TEXTS.len(), 32));
}
