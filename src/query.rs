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

use crate::embed::OrtEncoder;
use crate::engine::Pipeline;
use crate::error::{Error, Result};
use crate::index::VectorIndex;
use crate::late::TokenStore;
use crate::settings::Settings;
use crate::stages::{self, chunk, export, index};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub project_id: String,
    pub chunk_id: String,
    pub score: f32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub top_project: String,
    pub confidence: f32,
    pub chunks: Vec<Hit>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryHit {
    pub category: String,
    pub chunk_id: String,
    pub score: f32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exploration {
    pub project_id: String,
    pub categories: Vec<CategoryHit>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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

pub struct Searcher {
    enc: OrtEncoder,
    index: VectorIndex,
    tokens: TokenStore,
    lexical: Option<crate::lexical::LexicalIndex>,
    chunks: Vec<chunk::Chunk>,
    rerank_depth: usize,
    rerank_weight: f32,
    lexical_weight: f32,
    temperature: f32,
}

impl Searcher {
    /// Load everything a query needs from the current artifacts.
    pub fn open(settings: &Settings) -> Result<Searcher> {
        let pipeline = Pipeline::new(stages::all(), settings, settings.artifacts_path())?;
        let locate = |stage: &str| -> Result<std::path::PathBuf> {
            let (dir, _m, current) = pipeline.show(stage).map_err(|_| {
                Error::Usage(format!("no {stage} artifact yet: run `coltrast run` (or `make pipeline`) first"))
            })?;
            if !current {
                tracing::warn!("the {stage} artifact is out of date with the current settings; using the last run");
            }
            Ok(dir)
        };
        let index_dir = locate("index")?;
        let export_dir = locate("export")?;
        let chunk_dir = locate("chunk")?;
        let enc = OrtEncoder::from_settings(&export::served_dir(&export_dir, settings), settings)?;
        let vindex = VectorIndex::read(&index_dir.join(index::FAISS))?;
        let tokens = TokenStore::read(&index_dir.join(index::TOKENS))?;
        let (chunks, _, _) = chunk::read_chunks(&chunk_dir)?;
        let lexical_weight = settings.index.lexical_weight as f32;
        let lexical = if lexical_weight > 0.0 {
            let l = crate::lexical::LexicalIndex::open(&index_dir.join(index::BM25))?;
            if l.len() != chunks.len() {
                return Err(Error::Corrupt {
                    path: index_dir.join(index::BM25),
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
                path: index_dir.join(index::FAISS),
                stage: "index".into(),
                message: format!("{} vectors but chunks.parquet has {} rows", vindex.len(), chunks.len()),
            });
        }
        Ok(Searcher {
            enc,
            index: vindex,
            tokens,
            lexical,
            chunks,
            rerank_depth: settings.index.rerank_depth as usize,
            rerank_weight: settings.index.rerank_weight as f32,
            lexical_weight,
            temperature: settings.train.temperature as f32,
        })
    }

    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    fn hit(&self, row: i64, score: f32) -> Hit {
        let c = &self.chunks[row as usize];
        Hit { project_id: c.project_id.clone(), chunk_id: c.chunk_id.clone(), score, text: c.text.clone() }
    }

    /// Ranked (row, score) for a query: `depth` candidates, optionally reranked, optionally one project's.
    fn ranked(&self, query: &str, depth: usize, project: Option<&str>, rerank: bool) -> Result<Vec<(i64, f32)>> {
        let n = self.chunks.len();
        if n == 0 {
            return Ok(vec![]);
        }
        // With a project filter, look deeper so enough of its chunks survive the filter.
        let k = if project.is_some() { n } else { depth.max(if rerank { self.rerank_depth } else { 0 }).min(n) };
        let (emb, toks) = if rerank {
            let (e, t) = self.enc.embed_both(&[query])?;
            (e, Some(t))
        } else {
            (self.enc.embed(&[query])?, None)
        };
        let mut hits = self.index.search(&emb.data, k)?.into_iter().next().unwrap_or_default();
        if let Some(lex) = &self.lexical {
            hits = crate::lexical::fuse(&hits, &lex.search(query, k)?, self.lexical_weight);
        }
        if let Some(p) = project {
            hits.retain(|(r, _)| self.chunks[*r as usize].project_id == p);
        }
        if let Some(t) = toks {
            hits = crate::late::rerank(hits, &t[0].data, &self.tokens, self.rerank_depth, self.rerank_weight)?;
        }
        Ok(hits)
    }

    /// `search`: the top `k` chunks.
    pub fn search(&self, query: &str, k: usize, project: Option<&str>, rerank: bool) -> Result<Vec<Hit>> {
        if let Some(p) = project {
            if !self.chunks.iter().any(|c| c.project_id == p) {
                return Err(Error::Usage(format!("--project {p:?}: no such project in the index")));
            }
        }
        Ok(self.ranked(query, k, project, rerank)?.into_iter().take(k).map(|(r, s)| self.hit(r, s)).collect())
    }

    /// `compare`: hits grouped by project, best first.
    pub fn compare(&self, query: &str, k: usize, rerank: bool) -> Result<Vec<ProjectResult>> {
        let ranked = self.ranked(query, self.rerank_depth.max(100), None, rerank)?;
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

    /// `ask`: the top project, a confidence and its best `k` chunks.
    pub fn ask(&self, question: &str, k: usize, rerank: bool) -> Result<Answer> {
        let projects = self.compare(question, usize::MAX, rerank)?;
        let Some(top) = projects.first() else {
            return Err(Error::Usage("the index is empty".into()));
        };
        let t = self.temperature.max(1e-3);
        let max = top.relevance;
        let z: f32 = projects.iter().map(|p| ((p.relevance - max) / t).exp()).sum();
        let confidence = 1.0 / z;
        let chunks = self.search(question, k, Some(&top.project_id), rerank)?;
        Ok(Answer { top_project: top.project_id.clone(), confidence, chunks })
    }

    /// `explore`: the best chunk per category for one project.
    pub fn explore(&self, keywords: &str, project: Option<&str>, rerank: bool) -> Result<Exploration> {
        let project_id = match project {
            Some(p) => p.to_string(),
            None => self.ask(keywords, 1, rerank)?.top_project,
        };
        let mut categories = Vec::new();
        for (name, phrase) in CATEGORIES {
            let q = format!("{keywords}: {phrase}");
            if let Some(h) = self.search(&q, 1, Some(&project_id), rerank)?.into_iter().next() {
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
