//! # mine: positive and hard-negative pairs
//!
//! **What.** Turns each Q&A into a training pair: a query, one positive text and a few hard negatives.
//!
//! - **Query.** `mine.query_template` applied to the question (`{question}`, `{title}`, `{project_id}`).
//! - **Positive.** With an answer: embed `question + " " + answer` and take the most similar chunk of the same
//!   project; if that similarity is below `mine.positive_threshold`, the answer text itself is the positive
//!   (`positive_source = "answer"`). Without an answer (BEIR): the labelled document's chunk most similar to
//!   the question.
//! - **Hard negatives.** The `mine.num_negatives` chunks of *other* projects most similar to the query,
//!   skipping any whose similarity exceeds the positive's by more than `mine.false_negative_margin` (likely
//!   false negatives) and any whose text equals the positive's.
//! - **Texts.** Positives and negatives are chunks' `embed_text`: what the index embeds, so training sees the
//!   texts exactly as they are served.
//! - **Split.** Inputs with qrels splits (BEIR `qrels/{train,dev,test}.tsv`) keep them; when they have no dev
//!   split, `mine.val_split` of the train queries become `val`, chosen by a seeded blake3 of the query id
//!   ([`is_val_query`]), so early stopping and everything else tuned on validation work for BEIR too. Otherwise the split is
//!   project-wise: `round(val_split × projects)` projects (at least one, and at least one left for training
//!   when there are two or more) are drawn with a seeded shuffle and all their pairs are `val`; no project has
//!   text on both sides. The sizes are logged and recorded in the manifest.
//! - All similarities are cosines of base-model embeddings (the same cache as the chunk stage).
//!
//! **Inputs.** `ingest/qa.parquet`, `ingest/projects.parquet`, `chunk/chunks.parquet`; the base model.
//!
//! **Outputs.** `pairs.parquet`: `qa_id` Utf8, `project_id` Utf8, `split` Utf8, `query` Utf8, `positive_text`
//! Utf8, `positive_chunk_id` Utf8 nullable, `positive_source` Utf8 ("chunk" | "answer"), `positive_score`
//! Float32 (cosine of query and positive), `negative_chunk_ids` List<Utf8>, `negative_texts` List<Utf8>,
//! `negative_scores` List<Float32> (cosines to the query, descending).
//!
//! **Params.** `mine.positive_threshold`, `mine.num_negatives`, `mine.false_negative_margin`,
//! `mine.query_template`, `mine.val_split`, `mine.seed` (`mine.batch_size` is speed only).
//!
//! **Example.** `coltrast run mine --set mine.num_negatives=5`

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;

use crate::artifacts::pairs::{write_pairs, Pair, LABELLED, PAIRS};
use crate::artifacts::{chunks, dataset, Split, StageId};
use crate::embed::cache::EmbeddingCache;
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::settings::{MineSettings, Settings};

pub struct Mine;

impl Stage<Settings> for Mine {
    fn id(&self) -> StageId {
        StageId::Mine
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Ingest, StageId::Chunk, StageId::Generate]
    }
    fn code_version(&self) -> u32 {
        // 3: synthetic queries from the generate stage; the `source` column
        3
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        Settings::key_value(&MineKey::of(s))
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![crate::backend::base_model_input(s)])
    }
    fn available(&self) -> bool {
        crate::backend::available()
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config.mine.clone();
        let ds = dataset::read(ctx.upstream_dir(StageId::Ingest)?)?;
        let (chunks, chunk_emb, dim) = chunks::read_chunks(ctx.upstream_dir(StageId::Chunk)?)?;
        let encoder = crate::backend::load_base_encoder(ctx.config)?;
        if encoder.dim() != dim {
            return Err(Error::internal(format!("chunk embeddings have dim {dim}, the model {}", encoder.dim())));
        }
        let mut cache = EmbeddingCache::open(ctx.cache_root(), ctx.input_hash("base_model")?, dim)?;
        let batch = s.batch_size as usize;
        let mut embed = |texts: &[&str], what: &str| -> Result<Vec<f32>> {
            crate::embed::cache::embed_all(encoder.as_ref(), &mut cache, texts, batch, what)
        };
        let synthetic = crate::artifacts::synthetic::read_queries(ctx.upstream_dir(StageId::Generate)?)?;
        let mined = mine(&ds, &chunks, &chunk_emb, dim, &s, &synthetic, &mut embed)?;
        cache.flush()?;
        for (k, v) in &mined.stats {
            ctx.record_stat(k, v.clone());
        }
        let n = write_pairs(&ctx.output(PAIRS), &mined.pairs)?;
        ctx.record_rows(PAIRS, n);
        Ok(())
    }
}

#[derive(Debug)]
pub struct Mined {
    pub pairs: Vec<Pair>,
    pub stats: BTreeMap<String, serde_json::Value>,
}

/// Apply the query template.
pub fn render_query(template: &str, question: &str, title: &str, project_id: &str) -> String {
    template.replace("{title}", title).replace("{project_id}", project_id).replace("{question}", question)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// SplitMix64, for a seeded, platform-independent shuffle.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Project ids held out for validation: a seeded shuffle of the sorted ids, the first `round(frac × n)`.
pub fn val_projects(ids: &BTreeSet<String>, frac: f64, seed: u64) -> BTreeSet<String> {
    let mut v: Vec<&String> = ids.iter().collect();
    let mut rng = SplitMix(seed);
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    let n = v.len();
    let mut k = (frac * n as f64).round() as usize;
    if frac > 0.0 && n >= 2 {
        k = k.clamp(1, n - 1);
    }
    v.into_iter().take(k).cloned().collect()
}

/// The query id of a BEIR Q&A id (`qid`, or `qid#k` for its k-th relevant document).
pub fn query_id(qa_id: &str) -> &str {
    qa_id.split_once('#').map(|(q, _)| q).unwrap_or(qa_id)
}

/// Whether a BEIR train query goes to validation: a seeded blake3 of its query id, read as a number in
/// [0, 1), below `frac`. All pairs of one query fall on the same side, and adding queries never moves others.
pub fn is_val_query(qa_id: &str, frac: f64, seed: u64) -> bool {
    if frac <= 0.0 {
        return false;
    }
    let mut h = crate::hash::StableHasher::new("coltrast-val-query");
    h.u64(seed).str(query_id(qa_id));
    h.unit() < frac
}

/// The mining itself, on embeddings from `embed` (texts → flat unit vectors).
pub fn mine(
    ds: &dataset::Dataset,
    chunks: &[chunks::Chunk],
    chunk_emb: &[f32],
    dim: usize,
    s: &MineSettings,
    synthetic: &[crate::artifacts::synthetic::Synthetic],
    embed: &mut dyn FnMut(&[&str], &str) -> Result<Vec<f32>>,
) -> Result<Mined> {
    let questions = Questions::embed(ds, s, embed)?;
    let splits = SplitRule::of(ds, s);
    let miner = Miner { chunks, chunk_emb, dim, s };
    let mut pairs = miner.labelled_pairs(ds, &questions, &splits)?;
    let ranks = miner.base_ranks(ds, &questions.query_emb, &pairs);
    let mut stats = Stats::new();
    record_splits(&mut stats, &pairs);
    let synth = synthetic_pairs(chunks, chunk_emb, dim, s, synthetic, embed)?;
    record_synthetic(&mut stats, &synth);
    pairs.extend(synth);
    record_positives(&mut stats, &pairs);
    record_base_ranks(&mut stats, &ranks);
    Ok(Mined { pairs, stats })
}

/// The manifest's stats, by name.
type Stats = BTreeMap<String, serde_json::Value>;
/// A positive: (text, chunk id if a chunk, `"chunk"` or `"answer"`, embedding).
type Positive = (String, Option<String>, &'static str, Vec<f32>);
/// Per query: (rank of the first chunk of its project, rank of its positive chunk if it has one).
type Ranks = (Option<usize>, Option<Option<usize>>);

/// The labelled questions' texts and embeddings: rendered queries, the texts that pick positives, answers.
struct Questions<'a> {
    queries: Vec<String>,
    answers: Vec<&'a str>,
    query_emb: Vec<f32>,
    picker_emb: Vec<f32>,
    answer_emb: Vec<f32>,
    /// Question index → its row in `answer_emb` (questions with a non-blank answer only).
    answer_row: HashMap<usize, usize>,
}

impl<'a> Questions<'a> {
    /// Renders the queries, then embeds them, the positive pickers and the non-blank answers, in that order.
    fn embed(
        ds: &'a dataset::Dataset,
        s: &MineSettings,
        embed: &mut dyn FnMut(&[&str], &str) -> Result<Vec<f32>>,
    ) -> Result<Self> {
        let queries = render_queries(ds, &s.query_template);
        let pickers = pickers(ds);
        let answers: Vec<&str> = ds.qa.iter().map(|q| q.answer.as_deref().unwrap_or("")).collect();
        let qrefs: Vec<&str> = queries.iter().map(|s| s.as_str()).collect();
        let prefs: Vec<&str> = pickers.iter().map(|s| s.as_str()).collect();
        let query_emb = embed(&qrefs, "embedding queries")?;
        let picker_emb = embed(&prefs, "embedding question+answer")?;
        let with_answer: Vec<usize> = (0..ds.qa.len()).filter(|&i| !answers[i].trim().is_empty()).collect();
        let arefs: Vec<&str> = with_answer.iter().map(|&i| answers[i]).collect();
        let answer_emb = if arefs.is_empty() { vec![] } else { embed(&arefs, "embedding answers")? };
        let answer_row: HashMap<usize, usize> = with_answer.iter().enumerate().map(|(r, &i)| (i, r)).collect();
        Ok(Questions { queries, answers, query_emb, picker_emb, answer_emb, answer_row })
    }
}

/// Each question's query: `mine.query_template` with its question, its project's title and its project id.
fn render_queries(ds: &dataset::Dataset, template: &str) -> Vec<String> {
    let titles: HashMap<&str, &str> = ds.projects.iter().map(|p| (p.project_id.as_str(), p.title.as_str())).collect();
    ds.qa
        .iter()
        .map(|q| {
            render_query(template, &q.question, titles.get(q.project_id.as_str()).copied().unwrap_or(""), &q.project_id)
        })
        .collect()
}

/// Texts that pick the positive: question + answer, or the question alone without an answer.
fn pickers(ds: &dataset::Dataset) -> Vec<String> {
    ds.qa
        .iter()
        .map(|q| match &q.answer {
            Some(a) if !a.trim().is_empty() => format!("{} {}", q.question, a),
            _ => q.question.clone(),
        })
        .collect()
}

/// How labelled questions are split: qrels splits are kept (validation carved out of the train queries when
/// there is no dev split), else the split is project-wise.
struct SplitRule {
    has_qrels_split: bool,
    carve: bool,
    val: BTreeSet<String>,
    val_split: f64,
    seed: u64,
}

impl SplitRule {
    /// The rule for `ds` under `mine.val_split` and `mine.seed`.
    fn of(ds: &dataset::Dataset, s: &MineSettings) -> Self {
        let has_qrels_split = !ds.qa.is_empty() && ds.qa.iter().all(|q| q.split.is_some());
        // With qrels splits but no dev split of their own, validation is carved out of the train queries.
        let carve = has_qrels_split && !ds.qa.iter().any(|q| q.split.is_some_and(Split::is_validation));
        let project_ids: BTreeSet<String> = ds.projects.iter().map(|p| p.project_id.clone()).collect();
        let val =
            if has_qrels_split { BTreeSet::new() } else { val_projects(&project_ids, s.val_split, s.seed as u64) };
        SplitRule { has_qrels_split, carve, val, val_split: s.val_split, seed: s.seed as u64 }
    }

    /// The split of question `q`.
    fn split(&self, q: &dataset::Qa) -> Split {
        match q.split {
            Some(Split::Train) if self.carve && is_val_query(&q.qa_id, self.val_split, self.seed) => Split::Val,
            Some(sp) if self.has_qrels_split => sp,
            _ if self.val.contains(&q.project_id) => Split::Val,
            _ => Split::Train,
        }
    }
}

/// Row `i` of flat `dim`-wide embeddings, copied.
fn row(flat: &[f32], dim: usize, i: usize) -> Vec<f32> {
    flat[i * dim..(i + 1) * dim].to_vec()
}

/// What mining a question draws on: the chunks, their base-model embeddings and `[mine]`.
struct Miner<'a> {
    chunks: &'a [chunks::Chunk],
    chunk_emb: &'a [f32],
    dim: usize,
    s: &'a MineSettings,
}

impl Miner<'_> {
    /// One pair per labelled question, in order; the first failing question's error if any fails.
    fn labelled_pairs(&self, ds: &dataset::Dataset, qs: &Questions, splits: &SplitRule) -> Result<Vec<Pair>> {
        let mut by_project: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, c) in self.chunks.iter().enumerate() {
            by_project.entry(c.project_id.as_str()).or_default().push(i);
        }
        let pairs: Vec<Result<Pair>> = ds
            .qa
            .par_iter()
            .enumerate()
            .map(|(i, q)| {
                let own = by_project.get(q.project_id.as_str()).map(|v| v.as_slice()).unwrap_or(&[]);
                self.labelled_pair(i, q, own, qs, splits)
            })
            .collect();
        pairs.into_iter().collect::<Result<_>>()
    }

    /// The pair of question `i` (chunk rows of its project: `own`): its query, positive, hard negatives, split.
    fn labelled_pair(
        &self,
        i: usize,
        q: &dataset::Qa,
        own: &[usize],
        qs: &Questions,
        splits: &SplitRule,
    ) -> Result<Pair> {
        let (chunks, dim) = (self.chunks, self.dim);
        let qv = &qs.query_emb[i * dim..(i + 1) * dim];
        let (positive_text, positive_chunk_id, source, pos_vec) = self.positive(i, q, own, qs)?;
        let positive_score = dot(qv, &pos_vec);
        let neg =
            hard_negatives(chunks, self.chunk_emb, dim, self.s, qv, &q.project_id, &positive_text, positive_score);
        Ok(Pair {
            qa_id: q.qa_id.clone(),
            project_id: q.project_id.clone(),
            split: splits.split(q),
            query: qs.queries[i].clone(),
            positive_text,
            positive_chunk_id,
            positive_source: source.to_string(),
            positive_score,
            negative_chunk_ids: neg.iter().map(|(c, _)| chunks[*c].chunk_id.clone()).collect(),
            negative_texts: neg.iter().map(|(c, _)| chunks[*c].embed_text.clone()).collect(),
            negative_scores: neg.iter().map(|(_, s)| *s).collect(),
            source: LABELLED.to_string(),
        })
    }

    /// The positive of question `i`: its project's chunk most similar to its picker text, or its answer when
    /// it has one and that chunk is below `mine.positive_threshold`.
    fn positive(&self, i: usize, q: &dataset::Qa, own: &[usize], qs: &Questions) -> Result<Positive> {
        let (chunks, chunk_emb, dim) = (self.chunks, self.chunk_emb, self.dim);
        let pv = &qs.picker_emb[i * dim..(i + 1) * dim];
        let best = own
            .iter()
            .map(|&c| (c, dot(pv, &chunk_emb[c * dim..(c + 1) * dim])))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let has_answer = qs.answer_row.contains_key(&i);
        let from_chunk = |c: usize| {
            (chunks[c].embed_text.clone(), Some(chunks[c].chunk_id.clone()), "chunk", row(chunk_emb, dim, c))
        };
        Ok(match (best, has_answer) {
            (Some((c, sim)), true) if sim as f64 >= self.s.positive_threshold => from_chunk(c),
            (_, true) => (qs.answers[i].to_string(), None, "answer", row(&qs.answer_emb, dim, qs.answer_row[&i])),
            (Some((c, _)), false) => from_chunk(c),
            (None, false) => {
                return Err(Error::data(
                    "ingest/qa.parquet",
                    format!("qa {}", q.qa_id),
                    format!("project {:?} has no chunks and the Q&A has no answer to use as positive", q.project_id),
                ))
            }
        })
    }

    /// How well the base model already finds each question's project and positive chunk (by its query).
    fn base_ranks(&self, ds: &dataset::Dataset, query_emb: &[f32], pairs: &[Pair]) -> Vec<Ranks> {
        let (chunks, chunk_emb, dim) = (self.chunks, self.chunk_emb, self.dim);
        let chunk_row: HashMap<&str, usize> =
            chunks.iter().enumerate().map(|(i, c)| (c.chunk_id.as_str(), i)).collect();
        ds.qa
            .par_iter()
            .enumerate()
            .map(|(i, q)| {
                let qv = &query_emb[i * dim..(i + 1) * dim];
                let mut scores: Vec<(f32, usize)> =
                    (0..chunks.len()).map(|c| (dot(qv, &chunk_emb[c * dim..(c + 1) * dim]), c)).collect();
                scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let project_rank = scores.iter().position(|(_, c)| chunks[*c].project_id == q.project_id);
                let chunk_rank = pairs[i]
                    .positive_chunk_id
                    .as_deref()
                    .and_then(|id| chunk_row.get(id))
                    .map(|pos| scores.iter().position(|(_, c)| c == pos));
                (project_rank, chunk_rank)
            })
            .collect()
    }
}

/// Records `v` as the count `k`.
fn count(stats: &mut Stats, k: &str, v: usize) {
    stats.insert(k.to_string(), serde_json::Value::from(v as u64));
}

/// Records and logs each split's pairs and projects (`<split>_pairs`, `<split>_projects`).
fn record_splits(stats: &mut Stats, pairs: &[Pair]) {
    let mut by_split: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for p in pairs {
        let e = by_split.entry(p.split.as_str()).or_default();
        e.0 += 1;
        e.1.insert(p.project_id.as_str());
    }
    for (split, (n, projects)) in &by_split {
        count(stats, &format!("{split}_pairs"), *n);
        count(stats, &format!("{split}_projects"), projects.len());
        tracing::info!(split, pairs = n, projects = projects.len(), "split");
    }
}

/// Records the synthetic pairs of each source that has any (`synthetic_<source>_pairs`).
fn record_synthetic(stats: &mut Stats, synth: &[Pair]) {
    for src in ["headings", "cloze"] {
        let n = synth.iter().filter(|p| p.source == src).count();
        if n > 0 {
            count(stats, &format!("synthetic_{src}_pairs"), n);
        }
    }
}

/// Records where the positives came from (`positives_from_chunks`, `positives_from_answers`).
fn record_positives(stats: &mut Stats, pairs: &[Pair]) {
    count(stats, "positives_from_chunks", pairs.iter().filter(|p| p.positive_source == "chunk").count());
    count(stats, "positives_from_answers", pairs.iter().filter(|p| p.positive_source == "answer").count());
}

/// Records how well the base model already finds the right project for each query (used to choose the
/// template), and its positive chunk.
fn record_base_ranks(stats: &mut Stats, ranks: &[Ranks]) {
    if ranks.is_empty() {
        return;
    }
    let n = ranks.len() as f64;
    let top1_project = ranks.iter().filter(|r| r.0 == Some(0)).count();
    let mrr_project: f64 = ranks.iter().filter_map(|r| r.0).map(|k| 1.0 / (k as f64 + 1.0)).sum();
    let n_chunk_pos = ranks.iter().filter(|r| r.1.is_some()).count();
    let mrr_chunk: f64 = ranks.iter().filter_map(|r| r.1.flatten()).map(|k| 1.0 / (k as f64 + 1.0)).sum();
    stats.insert("base_query_top1_project".into(), serde_json::json!(top1_project as f64 / n));
    stats.insert("base_query_mrr_project".into(), serde_json::json!(mrr_project / n));
    if n_chunk_pos > 0 {
        stats.insert("base_query_mrr_positive_chunk".into(), serde_json::json!(mrr_chunk / n_chunk_pos as f64));
    }
}

/// The `num_negatives` chunks of other documents most similar to the query `qv`, skipping likely false
/// negatives (more similar than the positive by over `false_negative_margin`) and the positive's own text.
#[allow(clippy::too_many_arguments)]
fn hard_negatives(
    chunks: &[chunks::Chunk],
    chunk_emb: &[f32],
    dim: usize,
    s: &MineSettings,
    qv: &[f32],
    project_id: &str,
    positive_text: &str,
    positive_score: f32,
) -> Vec<(usize, f32)> {
    let mut cands: Vec<(usize, f32)> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.project_id != project_id)
        .map(|(c, _)| (c, dot(qv, &chunk_emb[c * dim..(c + 1) * dim])))
        .collect();
    cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut neg = Vec::new();
    for (c, sim) in cands {
        if neg.len() >= s.num_negatives as usize {
            break;
        }
        if sim as f64 > positive_score as f64 + s.false_negative_margin || chunks[c].embed_text == positive_text {
            continue;
        }
        neg.push((c, sim));
    }
    neg
}

/// Pairs for the generate stage's queries: the positive is the query's own chunk (its text as the generate
/// stage gave it), the negatives are mined as for labelled questions, and the split is the generate stage's.
fn synthetic_pairs(
    chunks: &[chunks::Chunk],
    chunk_emb: &[f32],
    dim: usize,
    s: &MineSettings,
    synthetic: &[crate::artifacts::synthetic::Synthetic],
    embed: &mut dyn FnMut(&[&str], &str) -> Result<Vec<f32>>,
) -> Result<Vec<Pair>> {
    if synthetic.is_empty() {
        return Ok(vec![]);
    }
    let row_of: HashMap<&str, usize> = chunks.iter().enumerate().map(|(i, c)| (c.chunk_id.as_str(), i)).collect();
    let texts: Vec<&str> = synthetic.iter().map(|q| q.query.as_str()).collect();
    let emb = embed(&texts, "embedding synthetic queries")?;
    synthetic
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let row = *row_of.get(q.chunk_id.as_str()).ok_or_else(|| {
                Error::data(
                    "generate/queries.parquet",
                    format!("query {}.chunk_id", q.query_id),
                    format!("chunk {:?} is not in chunks.parquet", q.chunk_id),
                )
            })?;
            let qv = &emb[i * dim..(i + 1) * dim];
            let positive_score = dot(qv, &chunk_emb[row * dim..(row + 1) * dim]);
            let neg = hard_negatives(chunks, chunk_emb, dim, s, qv, &q.project_id, &q.positive_text, positive_score);
            Ok(Pair {
                qa_id: format!("gen:{}", q.query_id),
                project_id: q.project_id.clone(),
                split: q.split,
                query: q.query.clone(),
                positive_text: q.positive_text.clone(),
                positive_chunk_id: Some(q.chunk_id.clone()),
                positive_source: "chunk".to_string(),
                positive_score,
                negative_chunk_ids: neg.iter().map(|(c, _)| chunks[*c].chunk_id.clone()).collect(),
                negative_texts: neg.iter().map(|(c, _)| chunks[*c].embed_text.clone()).collect(),
                negative_scores: neg.iter().map(|(_, s)| *s).collect(),
                source: q.source.as_str().to_string(),
            })
        })
        .collect()
}

/// The mine stage's cache key: everything of `[mine]` but `batch_size` (speed only).
#[derive(Debug, serde::Serialize)]
pub struct MineKey<'a> {
    pub positive_threshold: f64,
    pub num_negatives: u64,
    pub false_negative_margin: f64,
    pub query_template: &'a str,
    pub val_split: f64,
    pub seed: u64,
}

impl<'a> MineKey<'a> {
    pub fn of(s: &'a Settings) -> Self {
        let m = &s.mine;
        MineKey {
            positive_threshold: m.positive_threshold,
            num_negatives: m.num_negatives,
            false_negative_margin: m.false_negative_margin,
            query_template: &m.query_template,
            val_split: m.val_split,
            seed: m.seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::dataset::{Dataset, Project, Qa};

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// A fake embedder: each text maps to a fixed direction by keyword, so similarities are known.
    fn fake_embed(texts: &[&str], _: &str) -> Result<Vec<f32>> {
        Ok(texts
            .iter()
            .flat_map(|t| {
                let t = t.to_lowercase();
                let mut v = [0.01f32, 0.01, 0.01, 0.01];
                if t.contains("xray") {
                    v[0] += 1.0;
                }
                if t.contains("review") {
                    v[1] += 1.0;
                }
                if t.contains("trading") {
                    v[2] += 1.0;
                }
                if t.contains("zebra") {
                    v[3] += 1.0;
                }
                unit(&v)
            })
            .collect())
    }

    fn dataset() -> (Dataset, Vec<chunks::Chunk>, Vec<f32>) {
        let projects = ["med", "nlp", "rl"]
            .iter()
            .map(|id| Project {
                project_id: id.to_string(),
                title: id.to_uppercase(),
                text: String::new(),
                source: String::new(),
            })
            .collect();
        let qa = vec![
            Qa {
                qa_id: "med/0".into(),
                project_id: "med".into(),
                question: "Which xray data?".into(),
                answer: Some("xray images".into()),
                context: None,
                split: None,
            },
            // The answer matches nothing in its project's chunks: falls back to the answer.
            Qa {
                qa_id: "med/1".into(),
                project_id: "med".into(),
                question: "Which animal?".into(),
                answer: Some("a zebra".into()),
                context: None,
                split: None,
            },
            Qa {
                qa_id: "nlp/0".into(),
                project_id: "nlp".into(),
                question: "What reviews?".into(),
                answer: Some("review texts".into()),
                context: None,
                split: None,
            },
            Qa {
                qa_id: "rl/0".into(),
                project_id: "rl".into(),
                question: "What trading?".into(),
                answer: Some("crypto trading".into()),
                context: None,
                split: None,
            },
        ];
        let texts = [
            ("med", "xray chunk"),
            ("med", "xray duplicate chunk"),
            ("nlp", "review chunk"),
            ("nlp", "xray in a review chunk"),
            ("rl", "trading chunk"),
            ("rl", "xray chunk"), // same text as med's positive: never a negative for it
        ];
        let chunks: Vec<chunks::Chunk> = texts
            .iter()
            .enumerate()
            .map(|(i, (p, t))| chunks::Chunk {
                chunk_id: format!("c{i}"),
                project_id: p.to_string(),
                ordinal: i as i64,
                text: t.to_string(),
                n_tokens: 4,
                embed_text: t.to_string(),
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(|(_, t)| *t).collect();
        let emb = fake_embed(&refs, "").unwrap();
        (Dataset { projects, qa }, chunks, emb)
    }

    fn settings() -> MineSettings {
        MineSettings { num_negatives: 2, false_negative_margin: 0.5, val_split: 0.0, ..MineSettings::default() }
    }

    #[test]
    fn positives_negatives_and_answer_fallback() {
        let (ds, chunks, emb) = dataset();
        let m = mine(&ds, &chunks, &emb, 4, &settings(), &[], &mut fake_embed).unwrap();
        let p = &m.pairs[0];
        assert_eq!(p.positive_source, "chunk");
        assert_eq!(p.positive_chunk_id.as_deref(), Some("c0"));
        // "xray chunk" in rl has the positive's exact text: skipped, never a negative.
        assert!(!p.negative_chunk_ids.contains(&"c5".to_string()), "{:?}", p.negative_chunk_ids);
        let p = &m.pairs[1];
        assert_eq!(p.positive_source, "answer");
        assert_eq!(p.positive_text, "a zebra");
        assert_eq!(p.positive_chunk_id, None);
        assert_eq!(m.stats["positives_from_answers"], 1);
        for (p, q) in m.pairs.iter().zip(&ds.qa) {
            for id in &p.negative_chunk_ids {
                let c = chunks.iter().find(|c| &c.chunk_id == id).unwrap();
                assert_ne!(c.project_id, q.project_id, "negative from the same project");
            }
            assert!(p.negative_scores.windows(2).all(|w| w[0] >= w[1]));
        }
    }

    #[test]
    fn false_negative_margin_skips_too_similar_chunks() {
        let (ds, chunks, emb) = dataset();
        // With margin 0, a negative may not be more similar to the query than the positive is.
        let s = MineSettings { false_negative_margin: 0.0, ..settings() };
        let m = mine(&ds, &chunks, &emb, 4, &s, &[], &mut fake_embed).unwrap();
        for p in &m.pairs {
            for sc in &p.negative_scores {
                assert!(*sc <= p.positive_score + 1e-6, "{p:?}");
            }
        }
        // c3 ("xray in a review chunk") is close to med/0's query; with margin 0 it stays below the positive.
        let generous = mine(&ds, &chunks, &emb, 4, &settings(), &[], &mut fake_embed).unwrap();
        assert!(generous.pairs[0].negative_chunk_ids.contains(&"c3".to_string()));
    }

    #[test]
    fn project_wise_split_has_no_project_on_both_sides() {
        let ids: BTreeSet<String> = (0..50).map(|i| format!("p{i}")).collect();
        let val = val_projects(&ids, 0.2, 42);
        assert_eq!(val.len(), 10);
        assert_eq!(val, val_projects(&ids, 0.2, 42), "deterministic");
        assert_ne!(val, val_projects(&ids, 0.2, 43), "seeded");
        let three: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(val_projects(&three, 0.2, 1).len(), 1);

        let (ds, chunks, emb) = dataset();
        let s = MineSettings { val_split: 0.34, ..settings() };
        let m = mine(&ds, &chunks, &emb, 4, &s, &[], &mut fake_embed).unwrap();
        let mut sides: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for p in &m.pairs {
            sides.entry(p.project_id.as_str()).or_default().insert(p.split.as_str());
        }
        assert!(sides.values().all(|s| s.len() == 1), "{sides:?}");
        assert!(m.pairs.iter().any(|p| p.split == Split::Val) && m.pairs.iter().any(|p| p.split == Split::Train));
    }

    #[test]
    fn beir_without_dev_split_carves_validation_from_train_queries_by_hash() {
        let (mut ds, chunks, emb) = dataset();
        // 40 train queries (two qrels for some) and a test one, all on project "med"
        ds.qa = (0..40)
            .flat_map(|i| {
                let k = if i % 5 == 0 { 2 } else { 1 };
                (0..k).map(move |j| Qa {
                    qa_id: if j == 0 { format!("q{i}") } else { format!("q{i}#{j}") },
                    project_id: "med".into(),
                    question: format!("xray question {i}"),
                    answer: None,
                    context: None,
                    split: Some(Split::Train),
                })
            })
            .collect();
        ds.qa.push(Qa {
            qa_id: "t0".into(),
            project_id: "med".into(),
            question: "xray test".into(),
            answer: None,
            context: None,
            split: Some(Split::Test),
        });
        let mut s = settings();
        s.val_split = 0.25;
        let m = mine(&ds, &chunks, &emb, 4, &s, &[], &mut fake_embed).unwrap();
        let split_of: BTreeMap<&str, Split> = m.pairs.iter().map(|p| (p.qa_id.as_str(), p.split)).collect();
        assert_eq!(split_of["t0"], Split::Test);
        let val: Vec<&&str> = split_of.iter().filter(|(_, s)| **s == Split::Val).map(|(q, _)| q).collect();
        assert!((4..=18).contains(&val.len()), "{val:?}");
        // one query's pairs stay together, and the choice is the hash's
        for p in &m.pairs {
            assert_eq!(p.split, split_of[query_id(&p.qa_id)], "{}", p.qa_id);
            if p.split != Split::Test {
                assert_eq!(p.split == Split::Val, is_val_query(&p.qa_id, 0.25, s.seed as u64));
            }
        }
        // another seed draws other queries; 0 carves nothing
        let other: Vec<bool> = (0..40).map(|i| is_val_query(&format!("q{i}"), 0.25, 7)).collect();
        let this: Vec<bool> = (0..40).map(|i| is_val_query(&format!("q{i}"), 0.25, s.seed as u64)).collect();
        assert_ne!(other, this);
        s.val_split = 0.0;
        let m = mine(&ds, &chunks, &emb, 4, &s, &[], &mut fake_embed).unwrap();
        assert!(m.pairs.iter().all(|p| p.split != Split::Val));
        // a BEIR dev split is kept as it is: nothing carved
        ds.qa[0].split = Some(Split::Dev);
        s.val_split = 0.25;
        let m = mine(&ds, &chunks, &emb, 4, &s, &[], &mut fake_embed).unwrap();
        assert_eq!(m.pairs.iter().filter(|p| p.split == Split::Val).count(), 0);
        assert_eq!(m.pairs.iter().filter(|p| p.split == Split::Dev).count(), 1);
    }

    #[test]
    fn synthetic_queries_become_pairs_with_their_own_split_and_source() {
        let (ds, chunks, emb) = dataset();
        let syn =
            |id: &str, q: &str, chunk: &str, project: &str, split: Split| crate::artifacts::synthetic::Synthetic {
                query_id: id.into(),
                query: q.into(),
                chunk_id: chunk.into(),
                project_id: project.into(),
                source: crate::settings::SyntheticSource::Cloze,
                split,
                positive_text: "trading without the sentence".into(),
                base_rank: 1,
            };
        let synthetic =
            vec![syn("s1", "which trading", "c4", "rl", Split::Train), syn("s2", "trading?", "c4", "rl", Split::Val)];
        let m = mine(&ds, &chunks, &emb, 4, &settings(), &synthetic, &mut fake_embed).unwrap();
        let labelled = m.pairs.iter().filter(|p| p.is_labelled()).count();
        assert_eq!(labelled, ds.qa.len());
        let s: Vec<&Pair> = m.pairs.iter().filter(|p| !p.is_labelled()).collect();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].qa_id.as_str(), s[0].split, s[0].source.as_str()), ("gen:s1", Split::Train, "cloze"));
        assert_eq!(s[1].split, Split::Val);
        assert_eq!(s[0].positive_chunk_id.as_deref(), Some("c4"));
        assert_eq!(s[0].positive_text, "trading without the sentence");
        for p in &s {
            assert!(!p.negative_chunk_ids.is_empty());
            for id in &p.negative_chunk_ids {
                assert_ne!(chunks.iter().find(|c| &c.chunk_id == id).unwrap().project_id, "rl");
            }
        }
        assert_eq!(m.stats["synthetic_cloze_pairs"], 2);
        // a query whose chunk is gone is a data error naming the file and the query
        let bad = vec![syn("s3", "q", "nope", "rl", Split::Train)];
        let e = mine(&ds, &chunks, &emb, 4, &settings(), &bad, &mut fake_embed).unwrap_err().to_string();
        assert!(e.contains("generate/queries.parquet") && e.contains("s3"), "{e}");
        // round trip, source included
        let dir = tempfile::tempdir().unwrap();
        write_pairs(&dir.path().join(PAIRS), &m.pairs).unwrap();
        assert_eq!(crate::artifacts::pairs::read_pairs(dir.path()).unwrap(), m.pairs);
    }

    #[test]
    fn query_template() {
        assert_eq!(render_query("{title}: {question}", "What?", "Med", "med"), "Med: What?");
        assert_eq!(render_query("{question}", "What?", "Med", "med"), "What?");
    }
}
