//! HTTP plumbing of the server: JSON errors, the JSON body extractor, and the middleware that every request
//! passes (request id, API key, timeout, metrics, access log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::state::AppState;

/// The routes metrics are labelled with; anything else is `unmatched`.
pub const ROUTES: [&str; 14] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/v1/info",
    "/v1/search",
    "/v1/search/batch",
    "/v1/ask",
    "/v1/explore",
    "/v1/compare",
    "/v1/embeddings",
    "/v1/admin/reload",
    "/favicon.ico",
];

/// Routes that answer without the API key.
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

pub const REQUEST_ID: &str = "x-request-id";
pub const GENERATION: &str = "x-coltrast-generation";

/// The body of every error: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_request`.
    pub code: String,
    /// What was wrong, naming the field where there is one.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    /// 422 naming the field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("{field}: {message}"))
    }
    pub fn not_ready() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the model and index are not loaded yet")
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        match e {
            // e.g. an unknown project
            crate::Error::Usage(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m),
            e => {
                tracing::error!("{e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body read up to the server's limit (413 past it) and parsed with the path of the failing field:
/// malformed JSON is 400 with its line and column, a wrong type or a missing field 422 naming the field.
/// The content type is not required (so `curl -d` works).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = state.body_limit;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over the limit of {limit} bytes"),
            )
        };
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large())?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parse a request body as [`ApiJson`] does.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                let at = if path.is_empty() || path == "." { String::new() } else { format!(" (in `{path}`)") };
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("malformed JSON{at}: {inner}"))
            }
            serde_json::error::Category::Data => {
                let field = if path.is_empty() || path == "." { "body".to_string() } else { path };
                ApiError::invalid(&field, inner)
            }
        }
    })?;
    de.end().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The request id: the client's `x-request-id` when it is short and printable, else a new one.
fn request_id(req: &Request) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if let Some(v) = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let start = std::process::id() as u64;
    format!("{start:x}-{n:x}")
}

/// Counts the request as in flight while it lives.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every request: id, API key (all routes but `/healthz` and `/readyz`), the request timeout, metrics and
/// one access-log line.
pub async fn middleware(
    State((state, timeout)): State<(Arc<AppState>, Duration)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = ROUTES.iter().find(|r| **r == path).copied().unwrap_or("unmatched");
    state.inflight.fetch_add(1, Ordering::Relaxed);
    let _inflight = InFlight(state.inflight.clone());

    let mut response = if state.api_key.is_some() && !OPEN.contains(&route) && !authorized(&state, &req) {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <key>` header is required",
        )
        .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {} s", timeout.as_secs_f64()),
            )
            .into_response(),
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let status_label = status.to_string();
    state.metrics.requests.with_label_values(&[route, status_label.as_str()]).inc();
    state.metrics.latency.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "coltrast::access",
        request_id = %id,
        method = %method,
        path = %path,
        status,
        ms = (elapsed.as_secs_f64() * 1e3 * 1e3).round() / 1e3,
        "request"
    );
    response
}

fn authorized(state: &AppState, req: &Request) -> bool {
    let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match v.strip_prefix("Bearer ") {
        Some(key) => state.key_matches(key.trim()),
        None => false,
    }
}

/// 404 for any unknown route.
pub async fn not_found(req: Request<Body>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route {}", req.uri().path()))
}

/// 405 for a known route with the wrong method.
pub async fn method_not_allowed(req: Request<Body>) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}
