//! The routes, their request and response types (the OpenAPI document is generated from these), and the
//! router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::http::{self, ApiError, ApiJson, ErrorBody, GENERATION};
use super::state::{AppState, Generation, Reloaded};
use crate::query::{self, Answer, Exploration, Hit, ProjectResult, QueryEncoder};

/// The most queries one `/v1/search/batch` or `/v1/embeddings` request may carry.
pub const MAX_BATCH: usize = 256;

const PAGE: &str = include_str!("page.html");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query text (over-long text is truncated at the model's max_seq_length).
    pub query: String,
    /// How many chunks, 1 to 100 [default 5].
    pub k: Option<usize>,
    /// Only this project's chunks.
    pub project: Option<String>,
    /// Re-score the top index.rerank_depth hits by late-interaction MaxSim [default false].
    pub rerank: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    /// Server time for the request, milliseconds.
    pub took_ms: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSearchRequest {
    /// 1 to 256 queries, encoded together.
    pub queries: Vec<String>,
    /// Chunks per query, 1 to 100 [default 5].
    pub k: Option<usize>,
    pub rerank: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryHits {
    pub query: String,
    pub hits: Vec<Hit>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchSearchResponse {
    pub results: Vec<QueryHits>,
    pub took_ms: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub query: String,
    /// Answer-context chunks, 1 to 100 [default 3].
    pub k: Option<usize>,
    pub rerank: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExploreRequest {
    /// Keywords; with no `project`, the project is the best match for them.
    pub query: String,
    pub project: Option<String>,
    pub rerank: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    pub query: String,
    /// Projects, 1 to 100 [default 5].
    pub k: Option<usize>,
    pub rerank: Option<bool>,
}

/// `coltrast compare --json`'s shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompareResponse {
    pub query: String,
    pub projects: Vec<ProjectResult>,
}

/// OpenAI's `input`: one text or a list of texts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// An OpenAI-compatible embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    pub input: EmbeddingInput,
    /// Any name: the served model answers, and its name is echoed back.
    pub model: Option<String>,
    /// `float` [default] or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// Must equal the model's dimension when given.
    pub dimensions: Option<usize>,
    pub user: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// `model.base`.
    pub base: String,
    /// The exported model served: `coltrast` (fine-tuned) or `base` (the index stage's choice under
    /// `export.model = "auto"`, see the validation guard).
    pub served: String,
    /// The system as eval names it (`coltrast+hybrid`, `base`, ...).
    pub served_system: String,
    /// Why that model: the validation guard's reason.
    pub served_reason: String,
    /// The export stage's fingerprint, which identifies the ONNX model.
    pub fingerprint: String,
    pub dim: usize,
    pub max_seq_length: usize,
    /// The engine that embeds queries: `onnxruntime` or `openvino` (`model.engine`, resolved on this CPU).
    pub engine: String,
    /// The engine's version.
    pub engine_version: String,
    /// What it computes in: `f32`, `bf16` (OpenVINO on a CPU with native bf16), `int8 (dynamic, MatMuls)`, ….
    pub precision: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IndexInfo {
    /// The FAISS factory string (`index.factory`).
    pub factory: String,
    pub size: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationInfo {
    pub number: u64,
    /// Unix seconds.
    pub loaded_at: u64,
    /// Whether the served artifacts match the server's settings (false: the last run's, served with a warning).
    pub current: bool,
    /// Stage → fingerprint of the served artifacts.
    pub fingerprints: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InfoResponse {
    pub version: &'static str,
    pub model: ModelInfo,
    pub index: IndexInfo,
    pub generation: GenerationInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadResponse {
    /// `swapped` or `unchanged`.
    pub result: &'static str,
    pub generation: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "coltrast", description = "Search over ColTrast-tuned embeddings: the `coltrast serve` API."),
    paths(search, search_batch, ask, explore, compare, embeddings, info, reload, healthz, readyz),
    components(schemas(ErrorBody, Hit, Answer, Exploration, ProjectResult))
)]
pub struct ApiDoc;

/// A response with the generation that answered it in `x-coltrast-generation`.
fn answered<T: Serialize>(g: &Generation, body: T) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(GENERATION, HeaderValue::from(g.number));
    r
}

fn check(query: &str, k: usize) -> Result<(), ApiError> {
    query::check_request(query, k).map_err(|(field, m)| ApiError::invalid(field, m))
}

/// Run `work` on the blocking pool with the current generation (503 before the first load).
async fn with_generation<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Generation) -> crate::Result<T> + Send + 'static,
) -> Result<(Arc<Generation>, T), ApiError> {
    let g = state.current().ok_or_else(ApiError::not_ready)?;
    let g2 = g.clone();
    let out = tokio::task::spawn_blocking(move || work(&g2)).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the request failed: {e}"))
    })??;
    Ok((g, out))
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// The top chunks for a query.
#[utoipa::path(post, path = "/v1/search", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn search(State(st): State<Arc<AppState>>, ApiJson(req): ApiJson<SearchRequest>) -> Result<Response, ApiError> {
    let t = Instant::now();
    let k = req.k.unwrap_or(5);
    check(&req.query, k)?;
    let rerank = req.rerank.unwrap_or(false);
    let (g, hits) = with_generation(&st, move |g| {
        g.searcher.with(&g.batcher).search(&req.query, k, req.project.as_deref(), rerank)
    })
    .await?;
    Ok(answered(&g, SearchResponse { hits, took_ms: ms(t) }))
}

/// Many queries in one request, encoded together.
#[utoipa::path(post, path = "/v1/search/batch", request_body = BatchSearchRequest,
    responses((status = 200, body = BatchSearchResponse), (status = 422, body = ErrorBody)))]
async fn search_batch(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<BatchSearchRequest>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let k = req.k.unwrap_or(5);
    if req.queries.is_empty() || req.queries.len() > MAX_BATCH {
        return Err(ApiError::invalid("queries", format!("1 to {MAX_BATCH} queries, got {}", req.queries.len())));
    }
    for (i, q) in req.queries.iter().enumerate() {
        query::check_request(q, k).map_err(|(field, m)| {
            ApiError::invalid(&if field == "query" { format!("queries[{i}]") } else { field.to_string() }, m)
        })?;
    }
    let rerank = req.rerank.unwrap_or(false);
    let (g, results) = with_generation(&st, move |g| {
        let texts: Vec<&str> = req.queries.iter().map(String::as_str).collect();
        let hits = g.searcher.with(&g.batcher).search_batch(&texts, k, rerank)?;
        Ok(req.queries.iter().zip(hits).map(|(q, hits)| QueryHits { query: q.clone(), hits }).collect::<Vec<_>>())
    })
    .await?;
    Ok(answered(&g, BatchSearchResponse { results, took_ms: ms(t) }))
}

/// The most likely project, a confidence and its best chunks (`coltrast ask --json`).
#[utoipa::path(post, path = "/v1/ask", request_body = AskRequest,
    responses((status = 200, body = Answer), (status = 422, body = ErrorBody)))]
async fn ask(State(st): State<Arc<AppState>>, ApiJson(req): ApiJson<AskRequest>) -> Result<Response, ApiError> {
    let k = req.k.unwrap_or(3);
    check(&req.query, k)?;
    let rerank = req.rerank.unwrap_or(false);
    let (g, a) = with_generation(&st, move |g| g.searcher.with(&g.batcher).ask(&req.query, k, rerank)).await?;
    Ok(answered(&g, a))
}

/// The best chunk per category for one project (`coltrast explore --json`).
#[utoipa::path(post, path = "/v1/explore", request_body = ExploreRequest,
    responses((status = 200, body = Exploration), (status = 422, body = ErrorBody)))]
async fn explore(State(st): State<Arc<AppState>>, ApiJson(req): ApiJson<ExploreRequest>) -> Result<Response, ApiError> {
    check(&req.query, 1)?;
    let rerank = req.rerank.unwrap_or(false);
    let (g, e) =
        with_generation(&st, move |g| g.searcher.with(&g.batcher).explore(&req.query, req.project.as_deref(), rerank))
            .await?;
    Ok(answered(&g, e))
}

/// Hits grouped by project (`coltrast compare --json`).
#[utoipa::path(post, path = "/v1/compare", request_body = CompareRequest,
    responses((status = 200, body = CompareResponse), (status = 422, body = ErrorBody)))]
async fn compare(State(st): State<Arc<AppState>>, ApiJson(req): ApiJson<CompareRequest>) -> Result<Response, ApiError> {
    let k = req.k.unwrap_or(5);
    check(&req.query, k)?;
    let rerank = req.rerank.unwrap_or(false);
    let (g, (query, projects)) = with_generation(&st, move |g| {
        let p = g.searcher.with(&g.batcher).compare(&req.query, k, rerank)?;
        Ok((req.query, p))
    })
    .await?;
    Ok(answered(&g, CompareResponse { query, projects }))
}

/// OpenAI-compatible embeddings from the served model (L2-normalised sentence embeddings).
#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingsRequest,
    responses((status = 200, body = EmbeddingsResponse), (status = 422, body = ErrorBody)))]
async fn embeddings(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(v) => v,
    };
    if texts.is_empty() || texts.len() > MAX_BATCH {
        return Err(ApiError::invalid("input", format!("1 to {MAX_BATCH} texts, got {}", texts.len())));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(&format!("input[{i}]"), "the text is empty"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid("encoding_format", format!("{other:?}: expected \"float\" or \"base64\"")))
        }
    };
    let dimensions = req.dimensions;
    let model = req.model.unwrap_or_else(|| st.settings.model.base.clone().unwrap_or_default());
    let (g, (vectors, tokens)) = with_generation(&st, move |g| {
        let enc = g.searcher.encoder();
        if let Some(d) = dimensions {
            if d != enc.dim() {
                return Err(crate::Error::Usage(format!(
                    "dimensions: the model has {} dimensions, not {d}",
                    enc.dim()
                )));
            }
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens: usize = enc.tokenize(&refs)?.iter().map(Vec::len).sum();
        Ok((g.batcher.encode(&refs, false)?, tokens))
    })
    .await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.sentence.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingVector::Float(v.sentence)
            };
            EmbeddingData { object: "embedding", index, embedding }
        })
        .collect();
    Ok(answered(
        &g,
        EmbeddingsResponse {
            object: "list",
            data,
            model,
            usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
        },
    ))
}

/// The model, the index, the served generation and the version.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = InfoResponse), (status = 503, body = ErrorBody)))]
async fn info(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let g = st.current().ok_or_else(ApiError::not_ready)?;
    let enc = g.searcher.encoder();
    let located = g.searcher.located();
    let body = InfoResponse {
        version: env!("CARGO_PKG_VERSION"),
        model: ModelInfo {
            base: st.settings.model.base.clone().unwrap_or_default(),
            served: g.searcher.served().model.clone(),
            served_system: g.searcher.served().system.clone(),
            served_reason: g.searcher.served().reason.clone(),
            fingerprint: located.export.1.clone(),
            dim: enc.dim(),
            max_seq_length: enc.max_seq_length(),
            engine: enc.engine().to_string(),
            engine_version: enc.engine_version().to_string(),
            precision: enc.computes_in().to_string(),
        },
        index: IndexInfo { factory: st.settings.index.factory.clone(), size: g.searcher.num_chunks() },
        generation: GenerationInfo {
            number: g.number,
            loaded_at: g.loaded_at,
            current: located.current,
            fingerprints: g.fingerprints(),
        },
    };
    Ok(answered(&g, body))
}

/// Load the artifacts for the server's settings again and swap to them. Needs the API key (403 when the
/// server has none).
#[utoipa::path(post, path = "/v1/admin/reload",
    responses((status = 200, body = ReloadResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn reload(State(st): State<Arc<AppState>>) -> Result<Json<ReloadResponse>, ApiError> {
    if st.api_key.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin routes need an API key: start the server with one (--api-key-env)",
        ));
    }
    match st.reload(true).await? {
        Reloaded::Swapped(n) => Ok(Json(ReloadResponse { result: "swapped", generation: n })),
        Reloaded::Unchanged(n) => Ok(Json(ReloadResponse { result: "unchanged", generation: n })),
    }
}

/// Alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready: the model and the index are loaded.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(st): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    st.current().map(|_| Json(Health { status: "ready" })).ok_or_else(ApiError::not_ready)
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The whole API, with the middleware of [`http::middleware`] around every route.
pub fn router(state: Arc<AppState>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/favicon.ico", get(favicon))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/search", post(search))
        .route("/v1/search/batch", post(search_batch))
        .route("/v1/ask", post(ask))
        .route("/v1/explore", post(explore))
        .route("/v1/compare", post(compare))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/admin/reload", post(reload))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state((state.clone(), request_timeout), http::middleware))
        .with_state(state)
}
