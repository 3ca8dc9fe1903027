//! Query commands over the current artifacts: `search`, `ask`, `explore`, `compare`.
//!
//! [`Searcher::open`] loads, once per process, the served ONNX model (ort), the FAISS index, the token store
//! for reranking and the chunk table of the artifacts that match the current settings (falling back, with a
//! warning, to the last run). Each query is then: tokenise + embed (ort) → FAISS search → fused with BM25 over
//! the chunks when `index.lexical_weight` > 0 (hybrid, [`crate::lexical`]) → optional rerank of the top
//! `index.rerank_depth` by `(1 - index.rerank_weight) * score + index.rerank_weight * MaxSim` → chunk metadata.
//!
//! - `search`: the top chunks with project, score and text; `--project` keeps one project's chunks.
//! - `ask`: the most likely project, a confidence, and its best 3 chunks as the answer context. The confidence
//!   is a softmax over each project's best chunk score with temperature `train.temperature` (0.05 by default,
//!   the temperature the model was trained with), i.e. how much the top project stands out.
//! - `explore`: for one project (named, or the best match for the keywords), the best chunk for each category:
//!   name, objective, model, data source, data size, lessons, performance, framework.
//! - `compare`: hits grouped by project, each project's best chunk and its relevance (best score).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::artifacts::{self, chunks};
use crate::embed::OrtEncoder;
use crate::engine::Pipeline;
use crate::error::{Error, Result};
use crate::index::VectorIndex;
use crate::late::TokenStore;
use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub project_id: String,
    pub chunk_id: String,
    pub score: f32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub top_project: String,
    pub confidence: f32,
    pub chunks: Vec<Hit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CategoryHit {
    pub category: String,
    pub chunk_id: String,
    pub score: f32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Exploration {
    pub project_id: String,
    pub categories: Vec<CategoryHit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProjectResult {
    pub project_id: String,
    pub relevance: f32,
    pub best: Hit,
    pub hits: usize,
}

/// The explore categories and the phrase each one searches with.
pub const CATEGORIES: [(&str, &str); 8] = [
    ("name", "project name and title"),
    ("objective", "objective and goal of the project"),
    ("model", "AI model architecture used"),
    ("data source", "data source: where the data comes from"),
    ("data size", "data size: how much data, number of samples"),
    ("lessons", "lessons learned"),
    ("performance", "performance metrics and results"),
    ("framework", "framework, libraries and technical implementation"),
];

/// One query's vectors: its sentence embedding and, when reranking, its token embeddings (`[n, token_dim]`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryVectors {
    pub sentence: Vec<f32>,
    pub tokens: Option<Vec<f32>>,
}

/// How query texts become vectors: the served ONNX model directly ([`OrtEncoder`]), or, in the server, a queue
/// that encodes concurrent requests together in one ONNX Runtime run ([`crate::serve`]).
pub trait QueryEncoder: Sync {
    /// One [`QueryVectors`] per text, in order; token embeddings only when `tokens`.
    fn encode(&self, texts: &[&str], tokens: bool) -> Result<Vec<QueryVectors>>;
}

impl QueryEncoder for OrtEncoder {
    fn encode(&self, texts: &[&str], tokens: bool) -> Result<Vec<QueryVectors>> {
        let ids = self.tokenize(texts)?;
        encode_ids(self, &ids, tokens)
    }
}

/// [`QueryEncoder::encode`] over token ids already made by [`OrtEncoder::tokenize`].
pub fn encode_ids(enc: &OrtEncoder, ids: &[Vec<u32>], tokens: bool) -> Result<Vec<QueryVectors>> {
    let (emb, toks) = if tokens {
        let (e, t) = enc.embed_both_ids(ids)?;
        (e, Some(t))
    } else {
        (enc.embed_ids(ids)?, None)
    };
    let d = emb.dim;
    let mut toks = toks.map(|t| t.into_iter());
    Ok((0..ids.len())
        .map(|i| QueryVectors {
            sentence: emb.data[i * d..(i + 1) * d].to_vec(),
            tokens: toks.as_mut().and_then(|t| t.next()).map(|r| r.data),
        })
        .collect())
}

/// The largest `k` a query command or the server accepts.
pub const MAX_K: usize = 100;

/// Checks every query command and the server apply: a query with some non-blank text, `k` in [1, 100].
/// The message names the field (`query`, `k`).
pub fn check_request(query: &str, k: usize) -> std::result::Result<(), (&'static str, String)> {
    if query.trim().is_empty() {
        return Err(("query", "the query is empty".to_string()));
    }
    if !(1..=MAX_K).contains(&k) {
        return Err(("k", format!("k must be between 1 and {MAX_K}, got {k}")));
    }
    Ok(())
}

/// Where the served artifacts are: each stage's artifact dir and fingerprint, and whether it matches the
/// current settings (a stale one is served with a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub chunk: (std::path::PathBuf, String),
    pub export: (std::path::PathBuf, String),
    pub index: (std::path::PathBuf, String),
    pub current: bool,
}

impl Located {
    /// `stage → fingerprint` of the served artifacts.
    pub fn fingerprints(&self) -> BTreeMap<String, String> {
        [("chunk", &self.chunk), ("export", &self.export), ("index", &self.index)]
            .into_iter()
            .map(|(s, (_, fp))| (s.to_string(), fp.clone()))
            .collect()
    }
}

pub struct Searcher {
    enc: std::sync::Arc<OrtEncoder>,
    index: VectorIndex,
    tokens: TokenStore,
    lexical: Option<crate::lexical::LexicalIndex>,
    chunks: Vec<chunks::Chunk>,
    located: Located,
    rerank_depth: usize,
    rerank_weight: f32,
    lexical_weight: f32,
    temperature: f32,
    served: crate::guard::Served,
}

impl Searcher {
    /// Find the artifacts that match the current settings (or, with a warning, the last run of each stage).
    pub fn locate(settings: &Settings) -> Result<Located> {
        let pipeline = Pipeline::of(settings)?;
        let mut current = true;
        let mut locate = |stage: &str| -> Result<(std::path::PathBuf, String)> {
            let (dir, m, up_to_date) = pipeline.show(stage).map_err(|_| {
                Error::Usage(format!("no {stage} artifact yet: run `coltrast run` (or `make pipeline`) first"))
            })?;
            if !up_to_date {
                tracing::warn!("the {stage} artifact is out of date with the current settings; using the last run");
                current = false;
            }
            Ok((dir, m.fingerprint))
        };
        let index = locate("index")?;
        let export = locate("export")?;
        let chunk = locate("chunk")?;
        Ok(Located { chunk, export, index, current })
    }

    /// Load everything a query needs from the current artifacts.
    pub fn open(settings: &Settings) -> Result<Searcher> {
        Self::open_located(settings, Self::locate(settings)?)
    }

    /// Load the artifacts [`Searcher::locate`] found.
    pub fn open_located(settings: &Settings, located: Located) -> Result<Searcher> {
        Self::open_located_with(settings, located, true)
    }

    /// [`Searcher::open_located`]; `spin`: whether ONNX Runtime's threads spin while idle
    /// ([`crate::embed::EncoderOptions::spin`]; the server turns it off).
    pub fn open_located_with(settings: &Settings, located: Located, spin: bool) -> Result<Searcher> {
        let index_dir = located.index.0.clone();
        let opts = crate::embed::EncoderOptions {
            intra_threads: settings.model.threads.map_or(0, |n| n.get()),
            device: settings.model.device,
            engine: crate::embed::Engine::from_settings(settings, settings.model.device),
            spin,
            ..Default::default()
        };
        let served = crate::guard::read(&index_dir, settings)?;
        let enc = OrtEncoder::load_with(&located.export.0.join(&served.model), &settings.ort_library_path(), opts)?;
        let vindex = VectorIndex::read(&index_dir.join(artifacts::index::FAISS))?;
        let tokens = TokenStore::read(&index_dir.join(artifacts::index::TOKENS))?;
        let (chunks, _, _) = chunks::read_chunks(&located.chunk.0)?;
        let lexical_weight = settings.index.lexical_weight as f32;
        let lexical = if lexical_weight > 0.0 {
            let l = crate::lexical::LexicalIndex::open(&index_dir.join(artifacts::index::BM25))?;
            if l.len() != chunks.len() {
                return Err(Error::Corrupt {
                    path: index_dir.join(artifacts::index::BM25),
                    stage: "index".into(),
                    message: format!("{} BM25 documents but chunks.parquet has {} rows", l.len(), chunks.len()),
                });
            }
            Some(l)
        } else {
            None
        };
        if chunks.len() != vindex.len() {
            return Err(Error::Corrupt {
                path: index_dir.join(artifacts::index::FAISS),
                stage: "index".into(),
                message: format!("{} vectors but chunks.parquet has {} rows", vindex.len(), chunks.len()),
            });
        }
        Ok(Searcher {
            enc: std::sync::Arc::new(enc),
            index: vindex,
            tokens,
            lexical,
            chunks,
            located,
            rerank_depth: settings.index.rerank_depth as usize,
            rerank_weight: settings.index.rerank_weight as f32,
            lexical_weight,
            temperature: settings.train.temperature as f32,
            served,
        })
    }

    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The served model (shared with whatever batches queries for it).
    pub fn encoder(&self) -> &std::sync::Arc<OrtEncoder> {
        &self.enc
    }

    /// What the index serves and why ([`crate::guard`]).
    pub fn served(&self) -> &crate::guard::Served {
        &self.served
    }

    pub fn located(&self) -> &Located {
        &self.located
    }

    pub fn index(&self) -> &VectorIndex {
        &self.index
    }

    /// The query methods, encoding through `enc` instead of the model directly.
    pub fn with<'a>(&'a self, enc: &'a dyn QueryEncoder) -> Queries<'a> {
        Queries { s: self, enc }
    }

    fn direct(&self) -> Queries<'_> {
        self.with(&*self.enc)
    }

    /// `search`: the top `k` chunks.
    pub fn search(&self, query: &str, k: usize, project: Option<&str>, rerank: bool) -> Result<Vec<Hit>> {
        self.direct().search(query, k, project, rerank)
    }

    /// `compare`: hits grouped by project, best first.
    pub fn compare(&self, query: &str, k: usize, rerank: bool) -> Result<Vec<ProjectResult>> {
        self.direct().compare(query, k, rerank)
    }

    /// `ask`: the top project, a confidence and its best `k` chunks.
    pub fn ask(&self, question: &str, k: usize, rerank: bool) -> Result<Answer> {
        self.direct().ask(question, k, rerank)
    }

    /// `explore`: the best chunk per category for one project.
    pub fn explore(&self, keywords: &str, project: Option<&str>, rerank: bool) -> Result<Exploration> {
        self.direct().explore(keywords, project, rerank)
    }

    fn hit(&self, row: i64, score: f32) -> Hit {
        let c = &self.chunks[row as usize];
        Hit { project_id: c.project_id.clone(), chunk_id: c.chunk_id.clone(), score, text: c.text.clone() }
    }

    fn check_project(&self, project: Option<&str>) -> Result<()> {
        match project {
            Some(p) if !self.chunks.iter().any(|c| c.project_id == p) => {
                Err(Error::Usage(format!("--project {p:?}: no such project in the index")))
            }
            _ => Ok(()),
        }
    }

    /// Ranked (row, score) for a query: `depth` candidates, optionally reranked, optionally one project's.
    fn ranked(
        &self,
        query: &str,
        qv: &QueryVectors,
        depth: usize,
        project: Option<&str>,
        rerank: bool,
    ) -> Result<Vec<(i64, f32)>> {
        let n = self.chunks.len();
        if n == 0 {
            return Ok(vec![]);
        }
        // With a project filter, look deeper so enough of its chunks survive the filter.
        let k = if project.is_some() { n } else { depth.max(if rerank { self.rerank_depth } else { 0 }).min(n) };
        let mut hits = self.index.search(&qv.sentence, k)?.into_iter().next().unwrap_or_default();
        if let Some(lex) = &self.lexical {
            hits = crate::lexical::fuse(&hits, &lex.search(query, k)?, self.lexical_weight);
        }
        if let Some(p) = project {
            hits.retain(|(r, _)| self.chunks[*r as usize].project_id == p);
        }
        if rerank {
            let t = qv.tokens.as_deref().ok_or_else(|| Error::internal("rerank without query token embeddings"))?;
            hits = crate::late::rerank(hits, t, &self.tokens, self.rerank_depth, self.rerank_weight)?;
        }
        Ok(hits)
    }

    fn search_vectors(
        &self,
        query: &str,
        qv: &QueryVectors,
        k: usize,
        project: Option<&str>,
        rerank: bool,
    ) -> Result<Vec<Hit>> {
        self.check_project(project)?;
        Ok(self.ranked(query, qv, k, project, rerank)?.into_iter().take(k).map(|(r, s)| self.hit(r, s)).collect())
    }

    fn compare_vectors(&self, query: &str, qv: &QueryVectors, k: usize, rerank: bool) -> Result<Vec<ProjectResult>> {
        let ranked = self.ranked(query, qv, self.rerank_depth.max(100), None, rerank)?;
        let mut by: BTreeMap<String, ProjectResult> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for (row, score) in ranked {
            let h = self.hit(row, score);
            match by.get_mut(&h.project_id) {
                Some(p) => p.hits += 1,
                None => {
                    order.push(h.project_id.clone());
                    by.insert(
                        h.project_id.clone(),
                        ProjectResult { project_id: h.project_id.clone(), relevance: score, best: h, hits: 1 },
                    );
                }
            }
        }
        Ok(order.into_iter().take(k).filter_map(|p| by.remove(&p)).collect())
    }

    fn ask_vectors(&self, question: &str, qv: &QueryVectors, k: usize, rerank: bool) -> Result<Answer> {
        let projects = self.compare_vectors(question, qv, usize::MAX, rerank)?;
        let Some(top) = projects.first() else {
            return Err(Error::Usage("the index is empty".into()));
        };
        let t = self.temperature.max(1e-3);
        let max = top.relevance;
        let z: f32 = projects.iter().map(|p| ((p.relevance - max) / t).exp()).sum();
        let confidence = 1.0 / z;
        let chunks = self.search_vectors(question, qv, k, Some(&top.project_id), rerank)?;
        Ok(Answer { top_project: top.project_id.clone(), confidence, chunks })
    }
}

/// The query methods of a [`Searcher`] with the [`QueryEncoder`] that turns their texts into vectors. Each
/// method encodes all of its texts in one call.
pub struct Queries<'a> {
    s: &'a Searcher,
    enc: &'a dyn QueryEncoder,
}

impl Queries<'_> {
    fn one(&self, text: &str, rerank: bool) -> Result<QueryVectors> {
        self.enc.encode(&[text], rerank)?.pop().ok_or_else(|| Error::internal("encoder returned no vectors"))
    }

    /// `search`: the top `k` chunks.
    pub fn search(&self, query: &str, k: usize, project: Option<&str>, rerank: bool) -> Result<Vec<Hit>> {
        self.s.check_project(project)?;
        let qv = self.one(query, rerank)?;
        self.s.search_vectors(query, &qv, k, project, rerank)
    }

    /// `search` for many queries, encoded together.
    pub fn search_batch(&self, queries: &[&str], k: usize, rerank: bool) -> Result<Vec<Vec<Hit>>> {
        let qvs = self.enc.encode(queries, rerank)?;
        queries.iter().zip(&qvs).map(|(q, qv)| self.s.search_vectors(q, qv, k, None, rerank)).collect()
    }

    /// `compare`: hits grouped by project, best first.
    pub fn compare(&self, query: &str, k: usize, rerank: bool) -> Result<Vec<ProjectResult>> {
        let qv = self.one(query, rerank)?;
        self.s.compare_vectors(query, &qv, k, rerank)
    }

    /// `ask`: the top project, a confidence and its best `k` chunks.
    pub fn ask(&self, question: &str, k: usize, rerank: bool) -> Result<Answer> {
        let qv = self.one(question, rerank)?;
        self.s.ask_vectors(question, &qv, k, rerank)
    }

    /// `explore`: the best chunk per category for one project.
    pub fn explore(&self, keywords: &str, project: Option<&str>, rerank: bool) -> Result<Exploration> {
        self.s.check_project(project)?;
        let phrases: Vec<String> = CATEGORIES.iter().map(|(_, phrase)| format!("{keywords}: {phrase}")).collect();
        let mut texts: Vec<&str> = vec![keywords];
        texts.extend(phrases.iter().map(String::as_str));
        let mut qvs = self.enc.encode(&texts, rerank)?.into_iter();
        let kv = qvs.next().ok_or_else(|| Error::internal("encoder returned no vectors"))?;
        let project_id = match project {
            Some(p) => p.to_string(),
            None => self.s.ask_vectors(keywords, &kv, 1, rerank)?.top_project,
        };
        let mut categories = Vec::new();
        for ((name, _), (q, qv)) in CATEGORIES.iter().zip(phrases.iter().zip(qvs)) {
            if let Some(h) = self.s.search_vectors(q, &qv, 1, Some(&project_id), rerank)?.into_iter().next() {
                categories.push(CategoryHit {
                    category: name.to_string(),
                    chunk_id: h.chunk_id,
                    score: h.score,
                    text: h.text,
                });
            }
        }
        Ok(Exploration { project_id, categories })
    }
}
