//! # chunk: sentence-embed and semantic chunking
//!
//! **What.** Splits each project's document into sentences (Markdown-aware, see [`crate::text`]), embeds them
//! with the base model, and merges consecutive sentences into chunks while they stay similar. Chunks are what
//! the retriever indexes and what mining draws positives and negatives from.
//!
//! Sections (`chunk.strategy = "sections"`, the default):
//! - a document whose titled text (`title + " " + text` when the title is not already its first heading) fits
//!   in `chunk.max_tokens` is one chunk, embedded exactly as `"none"` embeds it;
//! - a longer one is split into sentences and packed in document order: a heading starts a new chunk once the
//!   current one holds at least `chunk.min_tokens` tokens of text (shorter sections merge with the next), and
//!   a chunk never exceeds `chunk.max_tokens`; a sentence longer than that on its own is cut into token windows;
//! - each such chunk is embedded as `"<heading path>: <plain text>"`, the heading path being the headings that
//!   contain its first sentence, outermost first, joined by `" > "` (the BEIR title counts as the top heading),
//!   so a chunk cut out of a section still says what it is about. Nothing is truncated: the chunks cover every
//!   sentence of the document.
//!
//! On ai_faq_dev (BEIR, 233 passages, 84 of them over 256 tokens) this measured best; the seed's semantic
//! chunking at 0.7 cuts passages into one- or two-sentence fragments (bench/results/quality.md).
//!
//! Merging (`chunk.strategy = "semantic"`), sentence by sentence in document order:
//! - a heading starts a new chunk (unless the current chunk holds only headings), and the next sentence
//!   always joins it, so a heading stays with the text under it;
//! - otherwise a sentence joins the current chunk while its cosine similarity is >= `chunk.similarity_threshold`
//!   to the previous sentence (`compare = "previous"`) or to the normalised mean of the chunk's sentences so far
//!   (`compare = "centroid"`);
//! - a chunk never exceeds `chunk.max_tokens` tokens ([CLS] and [SEP] included); a sentence longer than that on
//!   its own is cut into token windows first (those pieces keep the plain text only).
//!
//! In "previous" mode the cuts for a threshold t are the heading cuts, the cuts where similarity < t, and the
//! greedy token-cap cuts in between; raising t only adds cuts, so a higher threshold never gives fewer chunks.
//! `chunk.strategy = "none"` keeps each document whole, as BEIR does (`title + " " + text` when the title is
//! not already the document's first heading), embedded up to `max_tokens` tokens.
//!
//! **Inputs.** `ingest/projects.parquet`; the base model (its files are hashed into the cache key).
//!
//! **Outputs.**
//! - `sentences.parquet`: `project_id` Utf8, `sentence_idx` Int64 (per project, from 0), `text` Utf8 (Markdown
//!   kept), `n_tokens` Int64 (of the plain text, [CLS]/[SEP] included), `is_heading` Boolean, `embedding`
//!   FixedSizeList<Float32, dim> (of the plain text). Empty with `strategy = "none"` or `"sections"`.
//! - `chunks.parquet`: `chunk_id` Utf8 (stable: blake3 of project id and chunk text, 16 hex digits), `project_id`
//!   Utf8, `ordinal` Int64 (per project), `text` Utf8 (Markdown kept), `n_tokens` Int64, `first_sentence_idx`
//!   Int64, `last_sentence_idx` Int64 (inclusive; -1 with `strategy = "none"`), `embed_text` Utf8 (exactly what
//!   was embedded: the Markdown-stripped text, or the titled document with `strategy = "none"`), `embedding`
//!   FixedSizeList<Float32, dim>.
//!
//! **Params.** `chunk.strategy`, `chunk.min_tokens`, `chunk.similarity_threshold`, `chunk.compare`, `chunk.max_tokens`
//! (`chunk.batch_size` is speed only and not in the key).
//!
//! **Cache.** Sentence and chunk embeddings go through [`crate::embed::cache`], keyed by (model hash, text
//! hash): changing only the threshold re-chunks without re-embedding one sentence. The manifest's stats say
//! how many texts were embedded and how many came from the cache.
//!
//! **Example.** `coltrast run chunk --set chunk.similarity_threshold=0.8`

use std::ops::Range;

use crate::artifacts::chunks::{
    chunk_id, write_chunks, write_sentences, ChunkRecord, SentenceRecord, CHUNKS, SENTENCES,
};
use crate::artifacts::dataset::{self, needs_title, titled_text};
use crate::artifacts::StageId;
use crate::backend::{self, SentenceEncoder};
use crate::backend::{base_model_input, load_base_encoder};
use crate::embed::cache::embed_all;
use crate::embed::cache::EmbeddingCache;
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::settings::{ChunkCompare, ChunkStrategy, Settings};
use crate::text;

/// `"sections"`: tokens kept free for the heading path when an over-long sentence is cut into windows.
const PATH_RESERVE: usize = 32;

pub struct ChunkStage;

impl Stage<Settings> for ChunkStage {
    fn id(&self) -> StageId {
        StageId::Chunk
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Ingest]
    }
    fn code_version(&self) -> u32 {
        3
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        Settings::key_value(&ChunkKey::of(s))
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![base_model_input(s)])
    }
    fn available(&self) -> bool {
        backend::available()
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config.chunk.clone();
        let ds = dataset::read(ctx.upstream_dir(StageId::Ingest)?)?;
        let encoder = load_base_encoder(ctx.config)?;
        let max_tokens = s.max_tokens as usize;
        if max_tokens > encoder.max_seq_length() {
            return Err(Error::config(
                "settings",
                "chunk.max_tokens",
                format!("expected at most the model's max_seq_length {}, got {max_tokens}", encoder.max_seq_length()),
            ));
        }
        let dim = encoder.dim();
        let mut cache = EmbeddingCache::open(ctx.cache_root(), ctx.input_hash("base_model")?, dim)?;
        let counter = TokenCounter::new(encoder.as_ref())?;
        let out = match s.strategy {
            ChunkStrategy::Semantic => semantic(&ds.projects, encoder.as_ref(), &counter, &mut cache, &s, max_tokens)?,
            ChunkStrategy::Sections => sections(&ds.projects, encoder.as_ref(), &counter, &mut cache, &s, max_tokens)?,
            ChunkStrategy::None => {
                whole_documents(&ds.projects, encoder.as_ref(), &counter, &mut cache, &s, max_tokens)?
            }
        };
        cache.flush()?;
        ctx.record_stat("sentences_embedded", out.sentences_embedded as u64);
        ctx.record_stat("texts_embedded", cache.misses as u64);
        ctx.record_stat("texts_from_cache", cache.hits as u64);
        ctx.record_stat("sentences", out.sentences.len() as u64);
        ctx.record_stat("chunks", out.chunks.len() as u64);
        tracing::info!(sentences = out.sentences.len(), chunks = out.chunks.len(), embedded = cache.misses, "chunked");
        let records: Vec<SentenceRecord<'_>> = out
            .sentences
            .iter()
            .map(|r| SentenceRecord {
                project_id: &r.project_id,
                sentence_idx: r.idx,
                text: &r.text,
                n_tokens: r.n_tokens,
                is_heading: r.heading,
            })
            .collect();
        let n = write_sentences(&ctx.output(SENTENCES), &records, out.sentence_emb, dim)?;
        ctx.record_rows(SENTENCES, n);
        let n = write_chunks(&ctx.output(CHUNKS), &out.chunks, out.chunk_emb, dim)?;
        ctx.record_rows(CHUNKS, n);
        Ok(())
    }
}

struct SentenceRow {
    project_id: String,
    idx: i64,
    text: String,
    plain: String,
    n_tokens: i64,
    heading: bool,
    /// Heading level 1-6 (0 for a BEIR title, the root of every path); 0 for any other sentence.
    level: u8,
    block: usize,
    table_row: bool,
    list_item: bool,
}

struct Output {
    /// Sentences the model had to embed (not in the cache).
    sentences_embedded: usize,
    sentences: Vec<SentenceRow>,
    sentence_emb: Vec<f32>,
    chunks: Vec<ChunkRecord>,
    chunk_emb: Vec<f32>,
}

/// Counts tokens without truncation and cuts text into token windows.
pub struct TokenCounter {
    tokenizer: tokenizers::Tokenizer,
}

impl TokenCounter {
    pub fn new(encoder: &dyn SentenceEncoder) -> Result<Self> {
        let mut tokenizer = encoder.tokenizer().clone();
        tokenizer.with_truncation(None).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        Ok(TokenCounter { tokenizer })
    }

    /// Tokens of `text` without [CLS]/[SEP].
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(text, false).map_err(|e| Error::internal(format!("tokenizer: {e}")))?.len())
    }

    /// Byte ranges of `text` holding at most `window` tokens each, covering all tokens in order.
    pub fn windows(&self, text: &str, window: usize) -> Result<Vec<Range<usize>>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        let offsets = enc.get_offsets();
        let mut out = Vec::new();
        let mut i = 0;
        while i < offsets.len() {
            let j = (i + window).min(offsets.len());
            let start = if out.is_empty() { 0 } else { offsets[i].0 };
            let end = if j == offsets.len() { text.len() } else { offsets[j].0 };
            out.push(start..end);
            i = j;
        }
        Ok(out)
    }
}

/// A document's sentences (Markdown-aware), each over `budget` tokens cut into token windows. A document
/// without a heading of its own (BEIR) gets its title as a level-1 heading first.
fn split_rows(p: &dataset::Project, counter: &TokenCounter, budget: usize) -> Result<Vec<SentenceRow>> {
    split_rows_windowed(p, counter, budget)
}

/// [`split_rows`] with over-long sentences cut into windows of `window` tokens.
fn split_rows_windowed(p: &dataset::Project, counter: &TokenCounter, window: usize) -> Result<Vec<SentenceRow>> {
    let mut rows: Vec<SentenceRow> = Vec::new();
    let mut split = text::split_sentences(&p.text);
    if needs_title(p) {
        let title = text::Sentence {
            text: p.title.clone(),
            plain: p.title.clone(),
            kind: text::SentenceKind::Heading { level: 1 },
            heading: true,
            start: 0,
            end: 0,
            block: usize::MAX,
        };
        split.insert(0, title);
    }
    for sent in split {
        let n = counter.count(&sent.plain)?;
        let pieces: Vec<(String, String, usize)> = if n <= window {
            vec![(sent.text.clone(), sent.plain.clone(), n)]
        } else {
            counter
                .windows(&sent.plain, window)?
                .into_iter()
                .map(|r| {
                    let piece = sent.plain[r].trim().to_string();
                    let n = counter.count(&piece)?;
                    Ok((piece.clone(), piece, n))
                })
                .collect::<Result<_>>()?
        };
        let level = match sent.kind {
            // the BEIR title is the root of every heading path, above the text's own level-1 headings
            _ if sent.block == usize::MAX => 0,
            text::SentenceKind::Heading { level } => level,
            _ => 0,
        };
        for (text, plain, n) in pieces {
            if plain.is_empty() {
                continue;
            }
            rows.push(SentenceRow {
                project_id: p.project_id.clone(),
                idx: rows.len() as i64,
                text,
                plain,
                n_tokens: n as i64 + 2,
                heading: sent.heading,
                level,
                block: sent.block,
                table_row: sent.kind == text::SentenceKind::TableRow,
                list_item: sent.kind == text::SentenceKind::ListItem,
            });
        }
    }
    Ok(rows)
}

/// Markdown of consecutive sentences, with the separators their blocks imply.
fn join_markdown(members: &[SentenceRow]) -> String {
    let mut text = String::new();
    for (k, r) in members.iter().enumerate() {
        if k > 0 {
            let prev = &members[k - 1];
            text.push_str(if prev.block == r.block {
                if r.table_row {
                    "\n"
                } else {
                    " "
                }
            } else if prev.list_item && r.list_item {
                "\n"
            } else {
                "\n\n"
            });
        }
        text.push_str(&r.text);
    }
    text
}

/// A chunk of consecutive sentences, embedded as `embed_text`; its id is unique within the document.
fn sentence_chunk(
    p: &dataset::Project,
    ordinal: usize,
    members: &[SentenceRow],
    embed_text: String,
    counter: &TokenCounter,
    seen_ids: &mut std::collections::HashSet<String>,
) -> Result<ChunkRecord> {
    let text = join_markdown(members);
    let n_tokens = counter.count(&embed_text)? + 2;
    let mut id = chunk_id(&p.project_id, &text);
    if !seen_ids.insert(id.clone()) {
        id = chunk_id(&p.project_id, &format!("{text}\u{0}{ordinal}"));
        seen_ids.insert(id.clone());
    }
    Ok(ChunkRecord {
        chunk_id: id,
        project_id: p.project_id.clone(),
        ordinal: ordinal as i64,
        text,
        n_tokens: n_tokens as i64,
        first: members[0].idx,
        last: members[members.len() - 1].idx,
        embed_text,
    })
}

fn semantic(
    projects: &[dataset::Project],
    encoder: &dyn SentenceEncoder,
    counter: &TokenCounter,
    cache: &mut EmbeddingCache,
    s: &crate::settings::ChunkSettings,
    max_tokens: usize,
) -> Result<Output> {
    let budget = max_tokens - 2;
    // 1. Split every document into sentences (cutting any sentence over the token budget into windows).
    let mut sentences: Vec<SentenceRow> = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::with_capacity(projects.len());
    for p in projects {
        let start = sentences.len();
        sentences.extend(split_rows(p, counter, budget)?);
        spans.push(start..sentences.len());
    }
    // 2. Embed them (cached by text).
    let plains: Vec<&str> = sentences.iter().map(|r| r.plain.as_str()).collect();
    let batch = s.batch_size as usize;
    let before = cache.misses;
    let sentence_emb = embed_all(encoder, cache, &plains, batch, "embedding sentences")?;
    let sentences_embedded = cache.misses - before;
    let dim = encoder.dim();

    // 3. Merge, per project.
    let threshold = s.similarity_threshold as f32;
    let mut chunks = Vec::new();
    let mut chunk_plains: Vec<String> = Vec::new();
    for (p, span) in projects.iter().zip(&spans) {
        let rows = &sentences[span.clone()];
        let info: Vec<SentenceInfo> =
            rows.iter().map(|r| SentenceInfo { n_tokens: (r.n_tokens - 2) as usize, heading: r.heading }).collect();
        let emb = &sentence_emb[span.start * dim..span.end * dim];
        let mut seen_ids = std::collections::HashSet::new();
        for (ordinal, range) in merge(&info, emb, dim, threshold, s.compare, max_tokens).into_iter().enumerate() {
            let members = &rows[range.clone()];
            let plain = members.iter().map(|r| r.plain.as_str()).collect::<Vec<_>>().join(" ");
            chunks.push(sentence_chunk(p, ordinal, members, plain.clone(), counter, &mut seen_ids)?);
            chunk_plains.push(plain);
        }
    }
    let refs: Vec<&str> = chunk_plains.iter().map(|s| s.as_str()).collect();
    let chunk_emb = embed_all(encoder, cache, &refs, batch, "embedding chunks")?;
    Ok(Output { sentences_embedded, sentences, sentence_emb, chunks, chunk_emb })
}

/// `strategy = "sections"`: a document that fits in `max_tokens` is one chunk, exactly as `"none"` embeds it;
/// a longer one is cut along its Markdown sections and packed up to the cap, each chunk led by its heading
/// path. See the module docs.
fn sections(
    projects: &[dataset::Project],
    encoder: &dyn SentenceEncoder,
    counter: &TokenCounter,
    cache: &mut EmbeddingCache,
    s: &crate::settings::ChunkSettings,
    max_tokens: usize,
) -> Result<Output> {
    let budget = max_tokens - 2;
    let min_tokens = s.min_tokens.max(0) as usize;
    let mut chunks = Vec::new();
    let mut embed_texts: Vec<String> = Vec::new();
    for p in projects {
        let whole = titled_text(p);
        let n = counter.count(&whole)?;
        if n <= budget {
            chunks.push(ChunkRecord {
                chunk_id: chunk_id(&p.project_id, &whole),
                project_id: p.project_id.clone(),
                ordinal: 0,
                text: whole.clone(),
                n_tokens: (n + 2) as i64,
                first: -1,
                last: -1,
                embed_text: whole.clone(),
            });
            embed_texts.push(whole);
            continue;
        }
        // Windows of over-long sentences leave room for a heading path of up to PATH_RESERVE tokens.
        let rows = split_rows_windowed(p, counter, budget.saturating_sub(PATH_RESERVE).max(budget / 2))?;
        let mut seen_ids = std::collections::HashSet::new();
        // The path, its ": " separator, and a margin of one token for the joins.
        let mut path_cost = |path: &str| -> Result<usize> { Ok(counter.count(&format!("{path}:"))? + 1) };
        let packed = pack_sections(&rows, budget, min_tokens, &mut path_cost)?;
        for (ordinal, (range, path)) in packed.into_iter().enumerate() {
            let members = &rows[range];
            let body = members.iter().map(|r| r.plain.as_str()).collect::<Vec<_>>().join(" ");
            let embed_text = if path.is_empty() { body } else { format!("{path}: {body}") };
            chunks.push(sentence_chunk(p, ordinal, members, embed_text.clone(), counter, &mut seen_ids)?);
            embed_texts.push(embed_text);
        }
    }
    let refs: Vec<&str> = embed_texts.iter().map(|s| s.as_str()).collect();
    let chunk_emb = embed_all(encoder, cache, &refs, s.batch_size as usize, "embedding chunks")?;
    Ok(Output { sentences_embedded: 0, sentences: vec![], sentence_emb: vec![], chunks, chunk_emb })
}

/// Section packing: sentence ranges and, for each, the heading path above its first sentence (the headings
/// that contain it, outermost first, joined by " > "; a chunk that starts with a heading lists only that
/// heading's ancestors). A new chunk starts at a heading once the current one holds at least `min_tokens`
/// tokens of text, and whenever the next sentence would push the chunk, heading path included, past `budget`.
fn pack_sections(
    rows: &[SentenceRow],
    budget: usize,
    min_tokens: usize,
    path_cost: &mut dyn FnMut(&str) -> Result<usize>,
) -> Result<Vec<(Range<usize>, String)>> {
    // The heading path in force before each sentence.
    let mut stack: Vec<(u8, String)> = Vec::new();
    let mut paths: Vec<String> = Vec::with_capacity(rows.len());
    for r in rows {
        if r.heading {
            while stack.last().is_some_and(|(l, _)| *l >= r.level) {
                stack.pop();
            }
        }
        paths.push(stack.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > "));
        if r.heading {
            stack.push((r.level, r.plain.clone()));
        }
    }
    let mut path_tokens = std::collections::HashMap::new();
    let mut cost = |path: &str| -> Result<usize> {
        if path.is_empty() {
            return Ok(0);
        }
        if let Some(n) = path_tokens.get(path) {
            return Ok(*n);
        }
        let n = path_cost(path)?;
        path_tokens.insert(path.to_string(), n);
        Ok(n)
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut text_tokens = 0; // tokens of non-heading sentences in the current chunk
    let mut tokens = 0; // all tokens of the current chunk, heading path included
    for (i, r) in rows.iter().enumerate() {
        let n = (r.n_tokens - 2) as usize;
        if i == start {
            tokens = cost(&paths[i])? + n;
            text_tokens = if r.heading { 0 } else { n };
            continue;
        }
        let cut_at_heading = r.heading && text_tokens >= min_tokens.max(1);
        if cut_at_heading || tokens + n > budget {
            out.push((start..i, paths[start].clone()));
            start = i;
            tokens = cost(&paths[i])? + n;
            text_tokens = if r.heading { 0 } else { n };
        } else {
            tokens += n;
            if !r.heading {
                text_tokens += n;
            }
        }
    }
    if start < rows.len() {
        out.push((start..rows.len(), paths[start].clone()));
    }
    // A path too long for its chunk loses its innermost headings (down to none) rather than exceed the cap.
    for (range, path) in out.iter_mut() {
        let body: usize = rows[range.clone()].iter().map(|r| (r.n_tokens - 2) as usize).sum();
        while !path.is_empty() && body + cost(path)? > budget {
            match path.rfind(" > ") {
                Some(i) => path.truncate(i),
                None => path.clear(),
            }
        }
    }
    Ok(out)
}

fn whole_documents(
    projects: &[dataset::Project],
    encoder: &dyn SentenceEncoder,
    counter: &TokenCounter,
    cache: &mut EmbeddingCache,
    s: &crate::settings::ChunkSettings,
    max_tokens: usize,
) -> Result<Output> {
    let mut chunks = Vec::new();
    let mut embed_texts: Vec<String> = Vec::new();
    for p in projects {
        let text = titled_text(p);
        let n = counter.count(&text)?;
        // The encoder truncates at max_seq_length itself; cut earlier only when max_tokens is smaller.
        let embedded = if max_tokens < encoder.max_seq_length() && n > max_tokens - 2 {
            let r = counter.windows(&text, max_tokens - 2)?.remove(0);
            text[r].to_string()
        } else {
            text.clone()
        };
        chunks.push(ChunkRecord {
            chunk_id: chunk_id(&p.project_id, &text),
            project_id: p.project_id.clone(),
            ordinal: 0,
            n_tokens: (n + 2).min(max_tokens) as i64,
            text,
            first: -1,
            last: -1,
            embed_text: embedded.clone(),
        });
        embed_texts.push(embedded);
    }
    let refs: Vec<&str> = embed_texts.iter().map(|s| s.as_str()).collect();
    let chunk_emb = embed_all(encoder, cache, &refs, s.batch_size as usize, "embedding documents")?;
    Ok(Output { sentences_embedded: 0, sentences: vec![], sentence_emb: vec![], chunks, chunk_emb })
}

/// What merging needs to know of a sentence.
#[derive(Debug, Clone, Copy)]
pub struct SentenceInfo {
    /// Tokens without [CLS]/[SEP].
    pub n_tokens: usize,
    pub heading: bool,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Group consecutive sentences into chunks; returns sentence index ranges. `emb` holds unit vectors.
pub fn merge(
    sents: &[SentenceInfo],
    emb: &[f32],
    dim: usize,
    threshold: f32,
    compare: ChunkCompare,
    max_tokens: usize,
) -> Vec<Range<usize>> {
    let budget = max_tokens.saturating_sub(2);
    let mut out = Vec::new();
    if sents.is_empty() {
        return out;
    }
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let mut start = 0;
    let mut tokens = sents[0].n_tokens;
    let mut all_headings = sents[0].heading;
    let mut centroid: Vec<f32> = row(0).to_vec();
    for i in 1..sents.len() {
        let s = sents[i];
        let fits = tokens + s.n_tokens <= budget;
        let join = if !fits {
            false
        } else if s.heading {
            all_headings // consecutive headings stay together
        } else if all_headings {
            true // a heading keeps the text under it
        } else {
            let sim = match compare {
                ChunkCompare::Previous => dot(row(i), row(i - 1)),
                ChunkCompare::Centroid => {
                    let norm = dot(&centroid, &centroid).sqrt().max(1e-12);
                    dot(row(i), &centroid) / norm
                }
            };
            sim >= threshold
        };
        if join {
            tokens += s.n_tokens;
            all_headings &= s.heading;
            for (c, x) in centroid.iter_mut().zip(row(i)) {
                *c += x;
            }
        } else {
            out.push(start..i);
            start = i;
            tokens = s.n_tokens;
            all_headings = s.heading;
            centroid = row(i).to_vec();
        }
    }
    out.push(start..sents.len());
    out
}

/// The chunk stage's cache key: everything of `[chunk]` but `batch_size` (speed only).
#[derive(Debug, serde::Serialize)]
pub struct ChunkKey {
    pub strategy: ChunkStrategy,
    pub min_tokens: u64,
    pub similarity_threshold: f64,
    pub compare: ChunkCompare,
    pub max_tokens: u64,
}

impl ChunkKey {
    pub fn of(s: &Settings) -> Self {
        let c = &s.chunk;
        ChunkKey {
            strategy: c.strategy,
            min_tokens: c.min_tokens,
            similarity_threshold: c.similarity_threshold,
            compare: c.compare,
            max_tokens: c.max_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors in 2-D at the given angles (degrees).
    fn vecs(angles: &[f32]) -> Vec<f32> {
        angles.iter().flat_map(|a| [a.to_radians().cos(), a.to_radians().sin()]).collect()
    }

    fn info(n: usize) -> Vec<SentenceInfo> {
        vec![SentenceInfo { n_tokens: 10, heading: false }; n]
    }

    #[test]
    fn previous_mode_cuts_where_similarity_drops() {
        // cos(10°)=0.98, cos(80°)=0.17
        let emb = vecs(&[0.0, 10.0, 90.0, 100.0]);
        let r = merge(&info(4), &emb, 2, 0.7, ChunkCompare::Previous, 256);
        assert_eq!(r, vec![0..2, 2..4]);
        // threshold -1 merges everything, 1.0 splits everything not identical
        assert_eq!(merge(&info(4), &emb, 2, -1.0, ChunkCompare::Previous, 256), vec![0..4]);
        assert_eq!(merge(&info(4), &emb, 2, 1.0, ChunkCompare::Previous, 256).len(), 4);
    }

    #[test]
    fn centroid_mode_compares_to_running_mean() {
        // Drifting slowly: each step 30° from the previous (cos 0.87 >= 0.8), but the third is 60° from the
        // centroid direction of the first two (15°): cos(45°)=0.71 < 0.8.
        let emb = vecs(&[0.0, 30.0, 60.0]);
        assert_eq!(merge(&info(3), &emb, 2, 0.8, ChunkCompare::Previous, 256), vec![0..3]);
        assert_eq!(merge(&info(3), &emb, 2, 0.8, ChunkCompare::Centroid, 256), vec![0..2, 2..3]);
    }

    #[test]
    fn higher_threshold_never_gives_fewer_chunks_in_previous_mode() {
        // A pseudo-random walk of angles with headings and varied lengths.
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as f32 / (1u64 << 31) as f32
        };
        let mut angles = vec![0.0f32];
        let mut sents = vec![SentenceInfo { n_tokens: 5, heading: true }];
        for i in 1..200 {
            let a = angles[i - 1] + (next() - 0.5) * 120.0;
            angles.push(a);
            sents.push(SentenceInfo { n_tokens: 1 + (next() * 60.0) as usize, heading: next() < 0.08 });
        }
        let emb = vecs(&angles);
        let mut last = 0;
        for t in (-10..=10).map(|k| k as f32 / 10.0) {
            let n = merge(&sents, &emb, 2, t, ChunkCompare::Previous, 128).len();
            assert!(n >= last, "threshold {t}: {n} chunks < {last}");
            last = n;
        }
    }

    #[test]
    fn token_cap_is_never_exceeded() {
        let emb = vecs(&[0.0; 10]);
        let sents: Vec<SentenceInfo> = (0..10).map(|i| SentenceInfo { n_tokens: 20 + i, heading: false }).collect();
        let r = merge(&sents, &emb, 2, -1.0, ChunkCompare::Previous, 64);
        for range in &r {
            let total: usize = sents[range.clone()].iter().map(|s| s.n_tokens).sum::<usize>() + 2;
            assert!(total <= 64, "{range:?}: {total}");
        }
        assert!(r.len() >= 4);
    }

    #[test]
    fn headings_start_chunks_and_keep_their_text() {
        let emb = vecs(&[0.0, 0.0, 90.0, 0.0, 0.0]);
        let mut sents = info(5);
        sents[0].heading = true;
        sents[3].heading = true;
        // sentence 2 is orthogonal to the heading (0°) but a heading keeps the text under it, and the
        // similar sentence 3 is a heading, so it starts a new chunk anyway.
        let r = merge(&sents, &emb, 2, 0.7, ChunkCompare::Previous, 256);
        assert_eq!(r, vec![0..2, 2..3, 3..5]);
        // Two headings in a row stay together with the text below them.
        let mut sents = info(3);
        sents[0].heading = true;
        sents[1].heading = true;
        let emb = vecs(&[0.0, 90.0, 180.0]);
        assert_eq!(merge(&sents, &emb, 2, 0.7, ChunkCompare::Previous, 256), vec![0..3]);
    }

    /// Sentence rows: (tokens without [CLS]/[SEP], heading level or 0).
    fn rows(spec: &[(usize, u8)]) -> Vec<SentenceRow> {
        spec.iter()
            .enumerate()
            .map(|(i, &(n, level))| SentenceRow {
                project_id: "p".into(),
                idx: i as i64,
                text: format!("s{i}"),
                plain: format!("H{i}"),
                n_tokens: n as i64 + 2,
                heading: level > 0,
                level,
                block: i,
                table_row: false,
                list_item: false,
            })
            .collect()
    }

    fn pack(spec: &[(usize, u8)], budget: usize, min: usize) -> Vec<(Range<usize>, String)> {
        // a path costs one token per heading in it
        let mut cost = |p: &str| -> Result<usize> { Ok(p.split(" > ").count()) };
        pack_sections(&rows(spec), budget, min, &mut cost).unwrap()
    }

    #[test]
    fn sections_cut_at_headings_once_the_chunk_holds_min_tokens() {
        // # H0, text 30, ## H2, text 30, ## H4, text 5, ## H6, text 40
        let spec = [(2, 1), (30, 0), (2, 2), (30, 0), (2, 2), (5, 0), (2, 2), (40, 0)];
        let out = pack(&spec, 200, 20);
        let ranges: Vec<Range<usize>> = out.iter().map(|o| o.0.clone()).collect();
        // H4's section (5 tokens) is under min_tokens, so H6 joins it
        assert_eq!(ranges, [0..2, 2..4, 4..8]);
        // chunks that start at a heading carry only its ancestors; the first has none
        let paths: Vec<&str> = out.iter().map(|o| o.1.as_str()).collect();
        assert_eq!(paths, ["", "H0", "H0"]);
        // min_tokens 0: every heading after some text cuts
        assert_eq!(pack(&spec, 200, 0).len(), 4);
        // a huge min_tokens merges everything that fits
        assert_eq!(pack(&spec, 200, 1000).iter().map(|o| o.0.clone()).collect::<Vec<_>>(), [0..8]);
    }

    #[test]
    fn sections_never_exceed_the_budget_and_cover_every_sentence() {
        // # H0, ## H1, then 12 paragraphs of 20 tokens under H1, ### H14, 3 more
        let mut spec = vec![(2, 1), (2, 2)];
        spec.extend(std::iter::repeat((20, 0)).take(12));
        spec.push((2, 3));
        spec.extend(std::iter::repeat((20, 0)).take(3));
        let out = pack(&spec, 64, 10);
        let mut next = 0;
        for (range, path) in &out {
            assert_eq!(range.start, next, "gap or overlap: {out:?}");
            next = range.end;
            let body: usize = spec[range.clone()].iter().map(|s| s.0).sum();
            let cost = if path.is_empty() { 0 } else { path.split(" > ").count() };
            assert!(body + cost <= 64, "{range:?} {path:?}: {body} + {cost}");
        }
        assert_eq!(next, spec.len());
        // a chunk cut out of H1's section says where it is from
        assert_eq!(out[1].1, "H0 > H1");
        // the level-3 heading is nested under both
        let h14 = out.iter().find(|o| o.0.start == 14).expect("H14 starts a chunk");
        assert_eq!(h14.1, "H0 > H1");
        let after = out.iter().find(|o| o.0.start == 16);
        assert!(after.is_none() || after.unwrap().1 == "H0 > H1 > H14");
    }

    #[test]
    fn chunk_ids_are_stable_and_project_scoped() {
        assert_eq!(chunk_id("a", "text"), chunk_id("a", "text"));
        assert_ne!(chunk_id("a", "text"), chunk_id("b", "text"));
        assert_eq!(chunk_id("a", "text").len(), 16);
    }
}
