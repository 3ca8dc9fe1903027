//! Lexical search: BM25 over chunk texts with tantivy, and its fusion with dense scores.
//!
//! The seam for hybrid retrieval. [`LexicalIndex::build`] indexes each chunk's `embed_text` (one tantivy
//! document per chunk, with its row number as a fast field), on disk for the index stage or in memory for
//! eval. [`LexicalIndex::search`] tokenises a query with the field's own analyser (tantivy's default: split on
//! non-alphanumerics, lowercase) and ranks chunks by BM25 (k1 = 1.2, b = 0.75) over the union of its terms,
//! so no query syntax is parsed and no input can make it fail. Identifiers in FAQ questions (`OLLAMA_HOST`,
//! `n_jobs`) are split at punctuation on both sides (`ollama`, `host`) and match exactly, which dense models
//! blur.
//!
//! [`fuse`] combines a dense and a lexical ranking: each list's scores are min–max normalised over its own
//! candidates (a candidate absent from a list gets 0 there), and the fused score is
//! `(1 − w) · dense + w · lexical`. `w = 0` returns the dense ranking unchanged.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, FAST, TEXT};
use tantivy::{doc, Index, IndexReader, ReloadPolicy, Term};

use crate::error::{Error, Result};

const TEXT_FIELD: &str = "text";
const ROW_FIELD: &str = "row";
/// Writer heap: tantivy's minimum is 15 MB per thread.
const WRITER_HEAP: usize = 50_000_000;

fn tv(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: path.to_path_buf(), stage: "index".into(), message: format!("tantivy: {e}") }
}

pub struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    text: Field,
    len: usize,
    path: std::path::PathBuf,
}

impl LexicalIndex {
    fn schema() -> (Schema, Field, Field) {
        let mut b = Schema::builder();
        let text = b.add_text_field(TEXT_FIELD, TEXT);
        let row = b.add_u64_field(ROW_FIELD, FAST);
        (b.build(), text, row)
    }

    /// Index `texts` (row i = chunk row i) into `dir` (created, must be empty), or in memory when `dir` is
    /// `None`.
    pub fn build(dir: Option<&Path>, texts: &[&str]) -> Result<LexicalIndex> {
        let (schema, text, row) = Self::schema();
        let path = dir.map(Path::to_path_buf).unwrap_or_else(|| "<in memory>".into());
        let index = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                Index::create_in_dir(d, schema).map_err(|e| tv(&path, e))?
            }
            None => Index::create_in_ram(schema),
        };
        {
            let mut w =
                index.writer_with_num_threads::<tantivy::TantivyDocument>(1, WRITER_HEAP).map_err(|e| tv(&path, e))?;
            for (i, t) in texts.iter().enumerate() {
                w.add_document(doc!(text => *t, row => i as u64)).map_err(|e| tv(&path, e))?;
            }
            w.commit().map_err(|e| tv(&path, e))?;
            w.wait_merging_threads().map_err(|e| tv(&path, e))?;
        }
        Self::from_index(index, path)
    }

    /// Open an index that [`LexicalIndex::build`] wrote.
    pub fn open(dir: &Path) -> Result<LexicalIndex> {
        if !dir.is_dir() {
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                stage: "index".into(),
                message: "no BM25 index here: rerun `coltrast run index`".into(),
            });
        }
        let index = Index::open_in_dir(dir).map_err(|e| tv(dir, e))?;
        Self::from_index(index, dir.to_path_buf())
    }

    fn from_index(index: Index, path: std::path::PathBuf) -> Result<LexicalIndex> {
        let schema = index.schema();
        let text = schema.get_field(TEXT_FIELD).map_err(|e| tv(&path, e))?;
        schema.get_field(ROW_FIELD).map_err(|e| tv(&path, e))?;
        // Manual reload: no watcher thread, and nothing is written into a (trusted, read-only) artifact dir.
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| tv(&path, e))?;
        let len = reader.searcher().num_docs() as usize;
        Ok(LexicalIndex { index, reader, text, len, path })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The analysed terms of `query`, in order (duplicates kept: BM25 counts a repeated query term twice).
    pub fn terms(&self, query: &str) -> Result<Vec<String>> {
        let mut analyzer = self.index.tokenizer_for_field(self.text).map_err(|e| tv(&self.path, e))?;
        let mut out = Vec::new();
        let mut stream = analyzer.token_stream(query);
        stream.process(&mut |t| out.push(t.text.clone()));
        Ok(out)
    }

    /// The top `k` chunk rows by BM25, best first; chunks sharing no term with the query are not returned.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(i64, f32)>> {
        let terms = self.terms(query)?;
        if terms.is_empty() || k == 0 || self.len == 0 {
            return Ok(vec![]);
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(Term::from_field_text(self.text, t), IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k).order_by_score()).map_err(|e| tv(&self.path, e))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let col = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64(ROW_FIELD)
                .map_err(|e| tv(&self.path, e))?;
            let row = col.first(addr.doc_id).ok_or_else(|| tv(&self.path, "a document without its row"))?;
            out.push((row as i64, score));
        }
        // Ties by row, so equal scores rank the same way on every run.
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

/// Min–max normalised scores of a ranking, keyed by row.
fn normalised(list: &[(i64, f32)]) -> std::collections::HashMap<i64, f32> {
    let (lo, hi) = list.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| (lo.min(r.1), hi.max(r.1)));
    let span = hi - lo;
    list.iter().map(|&(row, s)| (row, if span > 0.0 { (s - lo) / span } else { 1.0 })).collect()
}

/// Fuse a dense and a lexical ranking (each best first) with lexical weight `w` in [0, 1]; see the module
/// docs. The result holds every candidate of either list, best first (ties: dense order, then row).
pub fn fuse(dense: &[(i64, f32)], lexical: &[(i64, f32)], w: f32) -> Vec<(i64, f32)> {
    if w <= 0.0 || lexical.is_empty() {
        return dense.to_vec();
    }
    let (d, l) = (normalised(dense), normalised(lexical));
    let dense_pos: std::collections::HashMap<i64, usize> = dense.iter().enumerate().map(|(i, r)| (r.0, i)).collect();
    let mut rows: Vec<i64> = dense.iter().map(|r| r.0).collect();
    rows.extend(lexical.iter().map(|r| r.0).filter(|r| !dense_pos.contains_key(r)));
    let mut out: Vec<(i64, f32)> = rows
        .into_iter()
        .map(|r| (r, (1.0 - w) * d.get(&r).copied().unwrap_or(0.0) + w * l.get(&r).copied().unwrap_or(0.0)))
        .collect();
    out.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(dense_pos.get(&a.0).unwrap_or(&usize::MAX).cmp(dense_pos.get(&b.0).unwrap_or(&usize::MAX)))
            .then(a.0.cmp(&b.0))
    });
    out
}

/// Fuse the first-stage score with MaxSim over the first `depth` candidates: `(1 − w) · score + w · maxsim`
/// (both cosines in [-1, 1]); the rest keep their order after them. `w = 1` is a pure MaxSim rerank, `w = 0`
/// keeps the first-stage order.
pub fn fuse_maxsim(ranked: &[(i64, f32)], maxsim: &[f32], w: f32) -> Vec<(i64, f32)> {
    let d = maxsim.len().min(ranked.len());
    let mut head: Vec<(usize, i64, f32)> = ranked[..d]
        .iter()
        .zip(maxsim)
        .enumerate()
        .map(|(i, (&(row, s), &m))| (i, row, (1.0 - w) * s + w * m))
        .collect();
    head.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    head.into_iter().map(|(_, r, s)| (r, s)).chain(ranked[d..].iter().copied()).collect()
}

#[cfg(test)]
mod tests;
