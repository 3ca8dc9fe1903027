//! # generate: synthetic queries over every chunk
//!
//! **What.** A few dozen labelled questions are too little signal to fine-tune on without forgetting what the
//! base model knew; the documents themselves hold more. This stage writes pseudo-queries for every chunk, not
//! only those with a labelled Q&A, from the sources named in `generate.sources`:
//! - `headings`: each heading inside the chunk, and the document's title on its first chunk when no other
//!   document has the same title (a title shared by many documents, such as "<project> FAQ", names none of
//!   them). A heading of fewer than three words is prefixed with the document title ("Installation" →
//!   "Alpha Installation"), since on its own it would fit every project's section of that name.
//! - `cloze` (inverse cloze task): `generate.cloze_per_chunk` sentences of 6 to 48 words, drawn by a seeded
//!   hash; the query is the sentence and the positive is the chunk's embedded text with that sentence
//!   removed, so the pair teaches the topic, not string matching.
//! - `llm`: a small instruction-tuned language model (`generate.llm_model`, SmolLM2-135M-Instruct as GGUF by
//!   default) reads the chunk (cut to `generate.llm_passage_tokens` of its tokens) and writes one question a
//!   user of the project might search for ([`llm_prompt`]); the first question in the reply is kept
//!   ([`extract_question`]). It runs in-process in libtorch ([`crate::backend::TextGenerator`]), greedy by
//!   default (`generate.llm_temperature` > 0: seeded sampling), so the stage is reproducible. Replies are cached
//!   by (model hash, prompt, decoding settings) under `artifacts/.cache/completions/`, so changing the filter,
//!   the share or another source writes no reply twice. The manifest records prompts, tokens, seconds and
//!   tokens/s.
//!
//! **Consistency filter** (as Promptagator): the base model embeds each query and ranks every chunk; a query
//! is kept only when its own chunk is within the top `generate.filter_top_k` (0 keeps all). Queries that
//! fit many chunks equally (generic headings) go, and so do sentences that do not say what their chunk is
//! about.
//!
//! **Split.** `generate.val_share` of the kept queries (a seeded blake3 of the query id) are `val`: the
//! validation guard and early stopping then decide on many more queries than the labelled validation
//! questions. The rest are `train`. `generate.max_queries` caps the total by a seeded sample.
//!
//! The labelled Q&A pairs keep their place; the mine stage adds these queries to them (`source` names the
//! origin of each pair), and eval scores only labelled questions.
//!
//! **Inputs.** `ingest/projects.parquet`, `chunk/chunks.parquet`; the base model; with `llm`, the GGUF file.
//!
//! **Outputs.** `queries.parquet`: `query_id` Utf8 (blake3 of source, chunk id and query, 16 hex digits),
//! `query` Utf8, `chunk_id` Utf8, `project_id` Utf8, `source` Utf8 (`headings` | `cloze` | `llm`), `split` Utf8
//! (`train` | `val`), `positive_text` Utf8 (what training uses as the positive), `base_rank` Int64 (1-based
//! rank of the own chunk under the base model).
//!
//! **Params.** `generate.sources`, `generate.cloze_per_chunk`, `generate.filter_top_k`, `generate.val_share`,
//! `generate.max_queries`, `generate.seed`, `generate.llm_*` (`generate.batch_size` and `generate.llm_batch`
//! are speed only).
//!
//! **Example.** `coltrast run --set 'generate.sources=["headings","cloze"]'`

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use rayon::prelude::*;

use crate::artifacts::synthetic::{write_queries, Synthetic, QUERIES};
use crate::artifacts::{chunks, dataset, Split, StageId};
use crate::backend::{ChatPrompt, Completion, DecodeOptions};
use crate::embed::cache::EmbeddingCache;
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::Result;
use crate::hash::StableHasher;
use crate::settings::{GenerateSettings, Settings, SyntheticSource};
use crate::table;

pub struct Generate;

impl Stage<Settings> for Generate {
    fn id(&self) -> StageId {
        StageId::Generate
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Ingest, StageId::Chunk]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        Settings::key_value(&GenerateKey::of(s))
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        let mut inputs = vec![crate::backend::base_model_input(s)];
        if s.generate.sources.contains(&SyntheticSource::Llm) {
            inputs.push(ExternalInput { name: "llm".into(), path: s.llm_model_path() });
        }
        Ok(inputs)
    }
    fn available(&self) -> bool {
        // without sources the stage only writes an empty table; with them it embeds with the base model
        crate::backend::available()
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config.generate.clone();
        let ds = dataset::read(ctx.upstream_dir(StageId::Ingest)?)?;
        let (chunks, chunk_emb, dim) = chunks::read_chunks(ctx.upstream_dir(StageId::Chunk)?)?;
        let mut candidates = candidates(&ds, &chunks, &s);
        if s.sources.contains(&SyntheticSource::Llm) {
            candidates.extend(llm_candidates(ctx, &ds, &chunks)?);
        }
        let mut kept = Vec::new();
        if !candidates.is_empty() {
            let encoder = crate::backend::load_base_encoder(ctx.config)?;
            let mut cache = EmbeddingCache::open(ctx.cache_root(), ctx.input_hash("base_model")?, dim)?;
            let texts: Vec<&str> = candidates.iter().map(|c| c.query.as_str()).collect();
            let emb = crate::embed::cache::embed_all(
                encoder.as_ref(),
                &mut cache,
                &texts,
                s.batch_size as usize,
                "embedding synthetic queries",
            )?;
            cache.flush()?;
            let row_of: HashMap<&str, usize> =
                chunks.iter().enumerate().map(|(i, c)| (c.chunk_id.as_str(), i)).collect();
            let ranks: Vec<i64> = candidates
                .par_iter()
                .enumerate()
                .map(|(i, c)| own_rank(&emb[i * dim..(i + 1) * dim], row_of[c.chunk_id.as_str()], &chunk_emb, dim))
                .collect();
            kept = filter_and_split(candidates, &ranks, &s);
        }
        let mut by_source: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for q in &kept {
            let e = by_source.entry(q.source.as_str().to_string()).or_default();
            if q.split == Split::Val {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        for (src, (train, val)) in &by_source {
            ctx.record_stat(&format!("{src}_train"), *train);
            ctx.record_stat(&format!("{src}_val"), *val);
            tracing::info!(source = %src, train, val, "synthetic queries");
        }
        ctx.record_stat("queries", kept.len() as u64);
        let n = write_queries(&ctx.output(QUERIES), &kept)?;
        ctx.record_rows(QUERIES, n);
        Ok(())
    }
}

/// A candidate before the filter: (query, chunk id, project id, source, positive text).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub query: String,
    pub chunk_id: String,
    pub project_id: String,
    pub source: SyntheticSource,
    pub positive_text: String,
}

fn hash_unit(parts: &[&str], seed: u64) -> f64 {
    let mut h = StableHasher::new("coltrast-generate");
    h.u64(seed);
    for p in parts {
        h.str(p);
    }
    h.unit()
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// `text` with the first occurrence of `sentence` cut out and spaces collapsed; None when it is not there.
fn without(text: &str, sentence: &str) -> Option<String> {
    let at = text.find(sentence)?;
    let rest = format!("{} {}", &text[..at], &text[at + sentence.len()..]);
    Some(rest.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Every candidate query of every chunk, in chunk order (deterministic).
pub fn candidates(ds: &dataset::Dataset, chunks: &[chunks::Chunk], s: &GenerateSettings) -> Vec<Candidate> {
    let sources: BTreeSet<SyntheticSource> = s.sources.iter().copied().collect();
    if sources.is_empty() {
        return vec![];
    }
    let titles: HashMap<&str, &str> = ds.projects.iter().map(|p| (p.project_id.as_str(), p.title.as_str())).collect();
    let mut title_count: HashMap<&str, usize> = HashMap::new();
    for p in &ds.projects {
        *title_count.entry(p.title.trim()).or_default() += 1;
    }
    let mut out = Vec::new();
    for c in chunks {
        let title = titles.get(c.project_id.as_str()).copied().unwrap_or("").trim();
        let sentences = crate::text::split_sentences(&c.text);
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut push = |out: &mut Vec<Candidate>, query: String, source, positive: String| {
            let q = query.trim().to_string();
            if words(&q) >= 1 && seen.insert(q.to_lowercase()) {
                out.push(Candidate {
                    query: q,
                    chunk_id: c.chunk_id.clone(),
                    project_id: c.project_id.clone(),
                    source,
                    positive_text: positive,
                });
            }
        };
        if sources.contains(&SyntheticSource::Headings) {
            let unique_title = !title.is_empty() && title != c.project_id && title_count.get(title) == Some(&1);
            if c.ordinal == 0 && unique_title {
                push(&mut out, title.to_string(), SyntheticSource::Headings, c.embed_text.clone());
            }
            for h in sentences.iter().filter(|x| x.heading) {
                let q = if words(&h.plain) < 3 && !title.is_empty() && !h.plain.contains(title) {
                    format!("{title} {}", h.plain)
                } else {
                    h.plain.clone()
                };
                push(&mut out, q, SyntheticSource::Headings, c.embed_text.clone());
            }
        }
        if sources.contains(&SyntheticSource::Cloze) && s.cloze_per_chunk > 0 {
            let mut eligible: Vec<(f64, &str)> = sentences
                .iter()
                .filter(|x| {
                    matches!(x.kind, crate::text::SentenceKind::Paragraph | crate::text::SentenceKind::ListItem)
                        && (6..=48).contains(&words(&x.plain))
                })
                .map(|x| (hash_unit(&[&c.chunk_id, &x.plain], s.seed), x.plain.as_str()))
                .collect();
            eligible.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
            let mut taken = 0;
            for (_, sent) in eligible {
                if taken >= s.cloze_per_chunk {
                    break;
                }
                // the positive must not hold the query verbatim
                if let Some(rest) = without(&c.embed_text, sent).filter(|r| words(r) >= 5) {
                    push(&mut out, sent.to_string(), SyntheticSource::Cloze, rest);
                    taken += 1;
                }
            }
        }
    }
    out
}

/// The instruction the language model gets for one chunk.
pub fn llm_prompt(project: &str, passage: &str) -> ChatPrompt {
    ChatPrompt {
        system: "You are a helpful AI assistant.".into(),
        user: format!(
            "Here is a passage from the documentation of {project}:\n\n{passage}\n\nWrite one question that a user \
             of {project} might search for, which this passage answers. Reply with the question only."
        ),
    }
}

/// The first question in a reply that is about the passage: the text up to a `?`, from the start of that
/// sentence or quotation (`The passage answers the question "How do I …?"` gives `How do I …?`). Questions
/// about the task itself ("What is the answer to this question?") are passed over. None when no question is
/// left, or it has fewer than 3 or more than 40 words.
pub fn extract_question(reply: &str) -> Option<String> {
    let mut from = 0;
    while let Some(rel) = reply[from..].find('?') {
        let end = from + rel;
        let head = &reply[from..end];
        let start = head
            .rfind(['"', '“', '\n'])
            .map(|i| i + head[i..].chars().next().map(char::len_utf8).unwrap_or(1))
            .into_iter()
            .chain(head.rfind(": ").map(|i| i + 2))
            .chain(head.rfind(". ").map(|i| i + 2))
            .chain(head.rfind("! ").map(|i| i + 2))
            .max()
            .unwrap_or(0);
        let q = format!("{}?", head[start..].trim());
        let q =
            q.trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '.' | ')' | '-' | '*' | ' ')).to_string();
        let lower = q.to_lowercase();
        let meta = ["this question", "the question", "this passage", "the passage", "this text", "great question"]
            .iter()
            .any(|m| lower.contains(m));
        if !meta && (3..=40).contains(&words(&q)) {
            return Some(q);
        }
        from = end + 1;
    }
    None
}

/// Replies of the language model cached by (model hash, prompt, decoding settings): a question for a chunk is
/// written once, whatever filter or share is tried after it. On disk: `artifacts/.cache/completions/<model
/// hash>/part-<hash>.parquet` (`key` Utf8, `text` Utf8, `prompt_tokens` Int64, `new_tokens` Int64), each part
/// written to a temporary name and renamed; a part that does not read is ignored (it is only an optimisation).
struct CompletionCache {
    dir: std::path::PathBuf,
    known: HashMap<String, Completion>,
    fresh: Vec<(String, Completion)>,
}

fn completions_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("prompt_tokens", DataType::Int64, false),
        Field::new("new_tokens", DataType::Int64, false),
    ]))
}

impl CompletionCache {
    fn open(root: &Path, model_hash: &str) -> Self {
        let dir = root.join("completions").join(model_hash);
        let mut known = HashMap::new();
        let parts = std::fs::read_dir(&dir)
            .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect::<Vec<_>>())
            .unwrap_or_default();
        for part in parts.iter().filter(|p| {
            p.extension().is_some_and(|x| x == "parquet")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        }) {
            let Ok(b) = table::read_parquet(part, "generate", &completions_schema()) else {
                tracing::warn!(part = %part.display(), "ignoring an unreadable completion cache part");
                continue;
            };
            let (Ok(k), Ok(t), Ok(pt), Ok(nt)) = (
                table::str_col(&b, "key"),
                table::str_col(&b, "text"),
                table::i64_col(&b, "prompt_tokens"),
                table::i64_col(&b, "new_tokens"),
            ) else {
                continue;
            };
            for i in 0..b.num_rows() {
                let c = Completion {
                    text: t.value(i).to_string(),
                    prompt_tokens: pt.value(i) as usize,
                    new_tokens: nt.value(i) as usize,
                };
                known.insert(k.value(i).to_string(), c);
            }
        }
        CompletionCache { dir, known, fresh: vec![] }
    }

    fn flush(&mut self) -> Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| crate::error::Error::io(&self.dir, e))?;
        let mut h = StableHasher::new("coltrast-completion-part");
        for (k, _) in &self.fresh {
            h.str(k);
        }
        let path = self.dir.join(format!("part-{}.parquet", &h.finish()[..16]));
        let f = &self.fresh;
        table::write_parquet(
            &path,
            completions_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(f.iter().map(|x| x.0.as_str()))),
                Arc::new(StringArray::from_iter_values(f.iter().map(|x| x.1.text.as_str()))),
                Arc::new(Int64Array::from_iter_values(f.iter().map(|x| x.1.prompt_tokens as i64))),
                Arc::new(Int64Array::from_iter_values(f.iter().map(|x| x.1.new_tokens as i64))),
            ],
        )?;
        for (k, c) in self.fresh.drain(..) {
            self.known.insert(k, c);
        }
        Ok(())
    }
}

/// The `llm` source: one question per chunk from the language model (cached replies are reused).
fn llm_candidates(
    ctx: &mut StageContext<'_, Settings>,
    ds: &dataset::Dataset,
    chunks: &[chunks::Chunk],
) -> Result<Vec<Candidate>> {
    let s = ctx.config.generate.clone();
    let path = ctx.config.llm_model_path();
    if !path.is_file() {
        return Err(crate::error::Error::Usage(format!(
            "generate.llm_model: {} is not there; `MODELS=\"all-MiniLM-L6-v2 SmolLM2-135M-Instruct\" make setup` installs \
             the default, or name another GGUF file",
            path.display()
        )));
    }
    let started = std::time::Instant::now();
    let generator = crate::backend::backend()?.text_generator(&path, ctx.config)?;
    tracing::info!(model = %generator.describe(), "language model loaded");
    let opts = DecodeOptions {
        max_new_tokens: s.llm_max_new_tokens as usize,
        temperature: s.llm_temperature as f32,
        seed: s.seed as u64,
        batch: s.llm_batch as usize,
    };
    let titles: HashMap<&str, &str> = ds.projects.iter().map(|p| (p.project_id.as_str(), p.title.as_str())).collect();
    let prompts: Vec<ChatPrompt> = chunks
        .iter()
        .map(|c| {
            let title = titles.get(c.project_id.as_str()).copied().unwrap_or("").trim();
            let project = if title.is_empty() { c.project_id.as_str() } else { title };
            llm_prompt(project, &generator.truncate(&c.text, s.llm_passage_tokens as usize))
        })
        .collect();
    let key = |p: &ChatPrompt| {
        let mut h = StableHasher::new("coltrast-completion");
        h.str(&p.system)
            .str(&p.user)
            .u64(opts.max_new_tokens as u64)
            .str(&format!("{}", opts.temperature))
            .u64(opts.seed);
        h.finish()
    };
    let keys: Vec<String> = prompts.iter().map(key).collect();
    let model_hash = ctx.input_hash("llm")?.to_string();
    let mut cache = CompletionCache::open(ctx.cache_root(), &model_hash[..model_hash.len().min(32)]);
    let todo: Vec<usize> = (0..prompts.len()).filter(|&i| !cache.known.contains_key(&keys[i])).collect();
    let gen_started = std::time::Instant::now();
    if !todo.is_empty() {
        let pb = crate::progress::bar(todo.len() as u64, "writing questions (llm)");
        let batch: Vec<ChatPrompt> = todo.iter().map(|&i| prompts[i].clone()).collect();
        let out = generator.generate(&batch, &opts, &|done| pb.set_position(done as u64))?;
        pb.finish_and_clear();
        for (&i, c) in todo.iter().zip(out) {
            cache.fresh.push((keys[i].clone(), c));
        }
        cache.flush()?;
    }
    let gen_secs = gen_started.elapsed().as_secs_f64();
    let (mut prompt_tokens, mut new_tokens) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut asked = 0u64;
    for (c, k) in chunks.iter().zip(&keys) {
        let reply = &cache.known[k];
        prompt_tokens += reply.prompt_tokens as u64;
        new_tokens += reply.new_tokens as u64;
        if let Some(q) = extract_question(&reply.text) {
            asked += 1;
            out.push(Candidate {
                query: q,
                chunk_id: c.chunk_id.clone(),
                project_id: c.project_id.clone(),
                source: SyntheticSource::Llm,
                positive_text: c.embed_text.clone(),
            });
        }
    }
    ctx.record_stat("llm_prompts", prompts.len() as u64);
    ctx.record_stat("llm_prompts_generated", todo.len() as u64);
    ctx.record_stat("llm_replies_with_question", asked);
    ctx.record_stat("llm_prompt_tokens", prompt_tokens);
    ctx.record_stat("llm_new_tokens", new_tokens);
    ctx.record_stat("llm_generate_seconds", (gen_secs * 1000.0).round() / 1000.0);
    ctx.record_stat("llm_seconds_total", (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    if !todo.is_empty() && gen_secs > 0.0 {
        let generated: u64 = todo.iter().map(|&i| cache.known[&keys[i]].new_tokens as u64).sum();
        let prompted: u64 = todo.iter().map(|&i| cache.known[&keys[i]].prompt_tokens as u64).sum();
        ctx.record_stat("llm_new_tokens_per_s", ((generated as f64 / gen_secs) * 100.0).round() / 100.0);
        ctx.record_stat("llm_prompt_tokens_per_s", ((prompted as f64 / gen_secs) * 100.0).round() / 100.0);
    }
    tracing::info!(
        prompts = prompts.len(),
        generated = todo.len(),
        with_question = asked,
        seconds = gen_secs,
        "llm questions"
    );
    Ok(out)
}

/// 1-based rank of chunk row `own` among all chunks for the query vector `q` (ties count against it).
pub fn own_rank(q: &[f32], own: usize, chunk_emb: &[f32], dim: usize) -> i64 {
    let dot = |r: usize| -> f32 { q.iter().zip(&chunk_emb[r * dim..(r + 1) * dim]).map(|(a, b)| a * b).sum() };
    let mine = dot(own);
    let n = chunk_emb.len() / dim.max(1);
    1 + (0..n).filter(|&r| r != own && dot(r) >= mine).count() as i64
}

/// The consistency filter, the cap and the split.
pub fn filter_and_split(candidates: Vec<Candidate>, ranks: &[i64], s: &GenerateSettings) -> Vec<Synthetic> {
    let mut kept: Vec<Synthetic> = candidates
        .into_iter()
        .zip(ranks)
        .filter(|(_, r)| s.filter_top_k == 0 || u64::try_from(**r).is_ok_and(|r| r <= s.filter_top_k))
        .map(|(c, r)| {
            let mut h = StableHasher::new("coltrast-synthetic-query");
            h.str(c.source.as_str()).str(&c.chunk_id).str(&c.query);
            let query_id = h.finish()[..16].to_string();
            let split = if hash_unit(&["split", &query_id], s.seed) < s.val_share { Split::Val } else { Split::Train };
            Synthetic {
                query_id,
                query: c.query,
                chunk_id: c.chunk_id,
                project_id: c.project_id,
                source: c.source,
                split,
                positive_text: c.positive_text,
                base_rank: *r,
            }
        })
        .collect();
    if s.max_queries > 0 && kept.len() > s.max_queries as usize {
        let mut order: Vec<(f64, usize)> =
            kept.iter().enumerate().map(|(i, q)| (hash_unit(&["sample", &q.query_id], s.seed), i)).collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let keep: BTreeSet<usize> = order.into_iter().take(s.max_queries as usize).map(|x| x.1).collect();
        kept = kept.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|x| x.1).collect();
    }
    kept
}

/// The generate stage's cache key: everything of `[generate]` but `batch_size` and `llm_batch` (speed only).
#[derive(Debug, serde::Serialize)]
pub struct GenerateKey<'a> {
    pub sources: &'a [SyntheticSource],
    pub cloze_per_chunk: u64,
    pub filter_top_k: u64,
    pub val_share: f64,
    pub max_queries: u64,
    pub seed: u64,
    pub llm_model: &'a str,
    pub llm_passage_tokens: u64,
    pub llm_max_new_tokens: u64,
    pub llm_temperature: f64,
}

impl<'a> GenerateKey<'a> {
    pub fn of(s: &'a Settings) -> Self {
        let g = &s.generate;
        GenerateKey {
            sources: &g.sources,
            cloze_per_chunk: g.cloze_per_chunk,
            filter_top_k: g.filter_top_k,
            val_share: g.val_share,
            max_queries: g.max_queries,
            seed: g.seed,
            llm_model: &g.llm_model,
            llm_passage_tokens: g.llm_passage_tokens,
            llm_max_new_tokens: g.llm_max_new_tokens,
            llm_temperature: g.llm_temperature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::dataset::{Dataset, Project};

    #[test]
    fn the_first_question_of_a_reply_is_kept() {
        let q = |s: &str| extract_question(s);
        assert_eq!(
            q("What is the purpose of the `n_jobs` parameter in scikit-learn?").as_deref(),
            Some("What is the purpose of the `n_jobs` parameter in scikit-learn?")
        );
        assert_eq!(
            q("The passage answers the question \"How do I cite JAX in a paper?\"").as_deref(),
            Some("How do I cite JAX in a paper?")
        );
        assert_eq!(
            q("Sure! Here it is: How can I change the data directory? Also: why?").as_deref(),
            Some("How can I change the data directory?")
        );
        assert_eq!(q("1. Where are models cached by default?").as_deref(), Some("Where are models cached by default?"));
        assert_eq!(
            q("What is the answer to this question? Is foo a Python 3.9 or later?").as_deref(),
            Some("Is foo a Python 3.9 or later?")
        );
        // no question, too short, or a run-on reply
        assert_eq!(q("The default directory is $HOME/.keras."), None);
        assert_eq!(q("Why?"), None);
        assert_eq!(q(&format!("{}?", "word ".repeat(50))), None);
    }

    #[test]
    fn the_llm_prompt_names_the_project_and_holds_the_passage() {
        let p = llm_prompt("Alpha", "Run `alpha serve` to start.");
        assert!(p.user.contains("documentation of Alpha") && p.user.contains("Run `alpha serve` to start."));
        assert!(!p.system.is_empty());
    }

    fn project(id: &str, title: &str) -> Project {
        Project { project_id: id.into(), title: title.into(), text: String::new(), source: String::new() }
    }

    fn chunk(id: &str, project: &str, ordinal: i64, text: &str) -> chunks::Chunk {
        let plain = crate::text::strip_markdown(text);
        chunks::Chunk {
            chunk_id: id.into(),
            project_id: project.into(),
            ordinal,
            text: text.into(),
            n_tokens: 10,
            embed_text: plain,
        }
    }

    fn data() -> (Dataset, Vec<chunks::Chunk>) {
        let ds = Dataset {
            projects: vec![project("a", "Alpha Scanner"), project("b", "Shared FAQ"), project("c", "Shared FAQ")],
            qa: vec![],
        };
        let chunks = vec![
            chunk(
                "a0",
                "a",
                0,
                "# Alpha Scanner\n\nAlpha reads chest X-ray images with a ResNet model. It was trained on ten \
                 thousand labelled scans from three hospitals.\n\n## Installation\n\nRun pip install alpha.",
            ),
            chunk(
                "b0",
                "b",
                0,
                "Proxies need care in every deployment of the tool. The answer is to set the variable first.",
            ),
            chunk("c0", "c", 0, "Logs go to the standard error stream of the worker process by default here."),
        ];
        (ds, chunks)
    }

    fn settings(sources: &[SyntheticSource]) -> GenerateSettings {
        GenerateSettings { sources: sources.to_vec(), ..GenerateSettings::default() }
    }

    #[test]
    fn headings_use_unique_titles_and_prefix_short_headings() {
        let (ds, chunks) = data();
        let c = candidates(&ds, &chunks, &settings(&[SyntheticSource::Headings]));
        let qs: Vec<(&str, &str)> = c.iter().map(|c| (c.chunk_id.as_str(), c.query.as_str())).collect();
        // the title once (the heading repeating it is a duplicate), "Installation" prefixed with the title;
        // "Shared FAQ" names two documents: no query
        assert_eq!(qs, [("a0", "Alpha Scanner"), ("a0", "Alpha Scanner Installation")]);
        assert!(c.iter().all(|c| c.positive_text == chunks[0].embed_text));
        assert!(candidates(&ds, &chunks, &settings(&[])).is_empty());
    }

    #[test]
    fn cloze_removes_the_sentence_from_the_positive_and_is_seeded() {
        let (ds, chunks) = data();
        let s = settings(&[SyntheticSource::Cloze]);
        let c = candidates(&ds, &chunks, &s);
        // a0 and b0 have two eligible sentences each (one drawn); c0 has one, and the rest would be empty
        assert_eq!(c.iter().map(|c| c.chunk_id.as_str()).collect::<Vec<_>>(), ["a0", "b0"]);
        for q in &c {
            assert!((6..=48).contains(&words(&q.query)), "{q:?}");
            assert!(!q.positive_text.contains(&q.query), "{q:?}");
        }
        let (x, y) = ("Proxies need care in every deployment of the tool.", "The answer is to set the variable first.");
        assert!(
            (c[1].query == x && c[1].positive_text == y) || (c[1].query == y && c[1].positive_text == x),
            "{:?}",
            c[1]
        );
        assert_eq!(candidates(&ds, &chunks, &s), c, "deterministic");
        let two = candidates(&ds, &chunks, &GenerateSettings { cloze_per_chunk: 2, ..s.clone() });
        assert_eq!(two.iter().filter(|q| q.chunk_id == "a0").count(), 2);
        // another seed may draw another sentence of a0, never a different count
        let other = candidates(&ds, &chunks, &GenerateSettings { seed: 7, ..s });
        assert_eq!(other.len(), c.len());
    }

    #[test]
    fn filter_keeps_queries_that_find_their_chunk_and_splits_by_hash() {
        let (ds, chunks) = data();
        let s = GenerateSettings { val_share: 0.5, filter_top_k: 1, ..settings(&[SyntheticSource::Cloze]) };
        let two = GenerateSettings { cloze_per_chunk: 2, ..s.clone() };
        let c = candidates(&ds, &chunks, &two);
        assert_eq!(c.len(), 4);
        let kept = filter_and_split(c.clone(), &[1, 2, 1, 1], &s);
        assert_eq!(kept.iter().map(|q| q.chunk_id.as_str()).collect::<Vec<_>>(), ["a0", "b0", "b0"]);
        assert!(kept.iter().all(|q| q.split == Split::Train || q.split == Split::Val));
        assert_eq!(filter_and_split(c.clone(), &[1, 2, 1, 1], &s), kept, "deterministic");
        let all = filter_and_split(c.clone(), &[9, 9, 9, 9], &GenerateSettings { filter_top_k: 0, ..s.clone() });
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|q| q.base_rank == 9));
        let capped = filter_and_split(c.clone(), &[1, 1, 1, 1], &GenerateSettings { max_queries: 2, ..s.clone() });
        assert_eq!(capped.len(), 2);
        // the validation share follows the query id: over many queries about half go to val at 0.5
        let many: Vec<Candidate> =
            (0..200).map(|i| Candidate { query: format!("query {i}"), ..c[0].clone() }).collect();
        let split = filter_and_split(many, &[1; 200], &s);
        let val = split.iter().filter(|q| q.split == Split::Val).count();
        assert!((70..=130).contains(&val), "{val}");
    }

    #[test]
    fn own_rank_counts_better_chunks() {
        let emb = vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        assert_eq!(own_rank(&[1.0, 0.0], 0, &emb, 2), 1);
        assert_eq!(own_rank(&[1.0, 0.0], 1, &emb, 2), 2);
        assert_eq!(own_rank(&[1.0, 0.0], 2, &emb, 2), 3);
    }

    #[test]
    fn queries_round_trip_through_parquet() {
        let (ds, chunks) = data();
        let s = settings(&[SyntheticSource::Headings, SyntheticSource::Cloze]);
        let c = candidates(&ds, &chunks, &s);
        let ranks = vec![1; c.len()];
        let kept = filter_and_split(c, &ranks, &s);
        let dir = tempfile::tempdir().unwrap();
        write_queries(&dir.path().join(QUERIES), &kept).unwrap();
        assert_eq!(crate::artifacts::synthetic::read_queries(dir.path()).unwrap(), kept);
    }
}
