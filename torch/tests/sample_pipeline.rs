//! End to end on the real MiniLM and the sample dataset: ingest → chunk → mine, the embedding cache, and the
//! properties of mined pairs.

use std::collections::{BTreeMap, BTreeSet};

use coltrast_testkit::*;

fn sample_toml() -> String {
    let data = repo_root().join("data/ai_projects_dataset.json");
    format!("[ingest]\npath = \"{}\"\n", data.display())
}

fn manifest(p: &Project, stage: &str) -> serde_json::Value {
    let dir = trusted_dirs(&p.path().join("artifacts"), stage);
    let latest = std::fs::read_to_string(p.path().join("artifacts").join(stage).join("latest")).unwrap();
    let dir = dir.iter().find(|d| d.ends_with(latest.trim())).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn sample_runs_through_mine_and_threshold_change_reembeds_no_sentence() {
    let p = Project::new(&sample_toml());
    let out = p.run(&["run", "mine", "--set", "chunk.strategy=semantic"]).ok();
    assert_eq!(out.stages(), ["ingest ran", "chunk ran", "generate ran", "mine ran"]);
    let chunk = manifest(&p, "chunk");
    let n_sent = chunk["stats"]["sentences"].as_u64().unwrap();
    assert!(n_sent > 50, "{chunk}");
    assert_eq!(chunk["stats"]["sentences_embedded"].as_u64().unwrap() > 0, true);

    // Only the threshold changes: chunk and later rerun, ingest stays cached, no sentence is re-embedded.
    let out =
        p.run(&["run", "mine", "--set", "chunk.strategy=semantic", "--set", "chunk.similarity_threshold=0.8"]).ok();
    let stages = out.stages();
    assert_eq!(stages[0], "ingest cached");
    assert_eq!(stages[1], "chunk ran");
    let chunk2 = manifest(&p, "chunk");
    assert_eq!(chunk2["stats"]["sentences_embedded"], 0, "{chunk2}");
    assert!(chunk2["stats"]["chunks"].as_u64() >= chunk["stats"]["chunks"].as_u64(), "higher threshold, fewer chunks?");

    // Mined pairs: negatives from other projects only; no project on both sides of the split.
    let dir = trusted_dirs(&p.path().join("artifacts"), "mine");
    let pairs = coltrast::artifacts::pairs::read_pairs(&dir[0]).unwrap();
    assert_eq!(pairs.len(), 18);
    let (chunks, _, dim) =
        coltrast::artifacts::chunks::read_chunks(trusted_dirs(&p.path().join("artifacts"), "chunk").first().unwrap())
            .unwrap();
    assert_eq!(dim, 384);
    let project_of: BTreeMap<&str, &str> =
        chunks.iter().map(|c| (c.chunk_id.as_str(), c.project_id.as_str())).collect();
    let mut sides: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for pair in &pairs {
        sides.entry(pair.project_id.as_str()).or_default().insert(pair.split.as_str());
        assert_eq!(pair.negative_chunk_ids.len(), 3, "{pair:?}");
        for id in &pair.negative_chunk_ids {
            if let Some(proj) = project_of.get(id.as_str()) {
                assert_ne!(*proj, pair.project_id);
            }
        }
        assert!(pair.positive_source == "chunk" || pair.positive_source == "answer");
        assert_eq!(pair.positive_source == "chunk", pair.positive_chunk_id.is_some());
    }
    assert!(sides.values().all(|s| s.len() == 1), "{sides:?}");
    assert!(sides.values().any(|s| s.contains("val")));

    // Every chunk respects the token cap.
    for c in &chunks {
        assert!(c.n_tokens <= 256, "{c:?}");
    }
}

/// The default chunking on the seed's READMEs (all longer than max_seq_length): each is split along its
/// sections, never truncated, and chunks cut out of a section are embedded after their heading path.
#[test]
fn default_sections_split_long_readmes_and_keep_every_sentence() {
    let p = Project::new(&sample_toml());
    p.run(&["run", "chunk"]).ok();
    let arts = p.path().join("artifacts");
    let (chunks, _, _) = coltrast::artifacts::chunks::read_chunks(&trusted_dirs(&arts, "chunk")[0]).unwrap();
    let ds = coltrast::artifacts::dataset::read(&trusted_dirs(&arts, "ingest")[0]).unwrap();
    assert_eq!(ds.projects.len(), 3);
    for proj in &ds.projects {
        let mine: Vec<_> = chunks.iter().filter(|c| c.project_id == proj.project_id).collect();
        assert!(mine.len() >= 2, "{} was not split: {} chunk(s)", proj.project_id, mine.len());
        for c in &mine {
            assert!(c.n_tokens <= 256, "{c:?}");
        }
        // every sentence's plain text is in some chunk, in order: nothing truncated
        let joined: String = mine.iter().map(|c| c.embed_text.as_str()).collect::<Vec<_>>().join(" ");
        for sent in coltrast::text::split_sentences(&proj.text) {
            assert!(joined.contains(&sent.plain), "{}: lost {:?}", proj.project_id, sent.plain);
        }
        // later chunks carry the README's title in their heading path
        assert!(mine[1..].iter().all(|c| c.embed_text.starts_with(&proj.title)), "{:?}", mine[1].embed_text);
    }
}

#[test]
fn token_cap_setting_is_respected() {
    let p = Project::new(&sample_toml());
    for strategy in ["sections", "semantic"] {
        let out =
            p.run(&["run", "chunk", "--set", "chunk.max_tokens=48", "--set", &format!("chunk.strategy={strategy}")]);
        let dir = out
            .ok()
            .stderr()
            .lines()
            .find(|l| l.starts_with("chunk"))
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_string();
        // the printed artifact dir is relative to the project
        let (chunks, _, _) = coltrast::artifacts::chunks::read_chunks(&p.path().join(&dir)).unwrap();
        assert!(chunks.len() > 20);
        for c in &chunks {
            assert!(c.n_tokens <= 48, "{strategy}: {} tokens: {}", c.n_tokens, c.text);
        }
    }
    let out = p.run(&["run", "chunk", "--set", "chunk.max_tokens=512"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("chunk.max_tokens: expected at most the model's max_seq_length 256"),
        "{}",
        out.stderr()
    );
}

/// The generate stage's `llm` source with the real SmolLM2 on the sample: a question per chunk, kept when the
/// base model finds its chunk; a changed filter reruns the stage but writes no reply twice (the completion
/// cache). Skips when SmolLM2 is not installed.
#[test]
fn llm_questions_are_written_once_and_filtered() {
    let cache = std::env::var_os("COLTRAST_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/coltrast"));
    let gguf = cache.join("models").join(coltrast::settings::DEFAULT_LLM);
    if !gguf.is_file() {
        eprintln!("skipping: {} is not installed (MODELS=SmolLM2-135M-Instruct make setup)", gguf.display());
        return;
    }
    // a shorter passage and reply than the defaults: the same code path at half the cost
    let p = Project::new(&format!(
        "{}[generate]\nsources = [\"llm\"]\nfilter_top_k = 1\nllm_passage_tokens = 96\nllm_max_new_tokens = 32\n",
        sample_toml()
    ));
    p.run(&["run", "generate"]).ok();
    let m = manifest(&p, "generate");
    let chunks = manifest(&p, "chunk")["stats"]["chunks"].as_u64().unwrap();
    assert_eq!(m["stats"]["llm_prompts"].as_u64(), Some(chunks), "{m}");
    assert_eq!(m["stats"]["llm_prompts_generated"].as_u64(), Some(chunks), "{m}");
    assert!(m["stats"]["llm_new_tokens_per_s"].as_f64().unwrap() > 0.0, "{m}");
    let asked = m["stats"]["llm_replies_with_question"].as_u64().unwrap();
    let read = || {
        coltrast::artifacts::synthetic::read_queries(&trusted_dirs(&p.path().join("artifacts"), "generate")[0]).unwrap()
    };
    let strict = read();
    assert!(asked * 2 > chunks, "{asked} of {chunks} replies hold a question: {m}");
    assert!(!strict.is_empty() && strict.iter().all(|q| q.base_rank == 1 && q.query.ends_with('?')), "{strict:?}");

    // a looser filter: the stage reruns from the cached replies and keeps at least as many
    let out = p.run(&["run", "generate", "--set", "generate.filter_top_k=0"]).ok();
    assert_eq!(out.stages().last().map(String::as_str), Some("generate ran"));
    let m = manifest(&p, "generate");
    assert_eq!(m["stats"]["llm_prompts_generated"].as_u64(), Some(0), "{m}");
    let all: Vec<_> = read_all(&p);
    assert_eq!(all.len() as u64, asked, "every extracted question is kept without a filter");
    assert!(strict.iter().all(|q| all.iter().any(|a| a.query == q.query && a.chunk_id == q.chunk_id)));
}

fn read_all(p: &Project) -> Vec<coltrast::artifacts::synthetic::Synthetic> {
    let latest = std::fs::read_to_string(p.path().join("artifacts/generate/latest")).unwrap();
    coltrast::artifacts::synthetic::read_queries(&p.path().join("artifacts/generate").join(latest.trim())).unwrap()
}
