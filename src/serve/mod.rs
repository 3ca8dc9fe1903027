//! `coltrast serve`: a long-running HTTP server over the current artifacts.
//!
//! One seam over the query library ([`crate::query::Searcher`]): [`state`] holds the served generation and
//! swaps it atomically, [`batch`] encodes concurrent requests together, [`api`] has the routes and their
//! types (the OpenAPI document is generated from them), [`http`] the JSON errors and the middleware (request
//! id, API key, timeout, metrics, access log), [`telemetry`] the Prometheus metrics. The server runs on
//! tokio with hyper's HTTP/1.1 (header read timeout) and axum's router, binds 127.0.0.1 unless told
//! otherwise, and needs no libtorch.
//!
//! A swap is triggered by a change of `artifacts/index/latest` (polled), by SIGHUP, or by
//! `POST /v1/admin/reload`; SIGTERM or Ctrl-C stops accepting, lets in-flight requests finish, and returns.

pub mod api;
pub mod batch;
pub mod http;
pub mod state;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::error::{Error, Result};
use crate::settings::Settings;

pub use batch::BatchConfig;
pub use state::AppState;

/// Everything `coltrast serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// The API key itself (read from the environment by the caller, never from argv).
    pub api_key: Option<String>,
    pub batch: BatchConfig,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    /// How often `artifacts/index/latest` is checked for a new index; `None`: never.
    pub watch_interval: Option<Duration>,
    /// How long in-flight requests get to finish after SIGTERM / Ctrl-C.
    pub shutdown_grace: Duration,
    /// Let ONNX Runtime's intra-op threads spin while idle (off by default: on a few cores the spinning
    /// takes the CPU from the request threads).
    pub spin: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            batch: BatchConfig { max_batch_tokens: 16384, max_wait: Duration::from_millis(2) },
            body_limit: 1 << 20,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            watch_interval: Some(Duration::from_secs(1)),
            shutdown_grace: Duration::from_secs(30),
            spin: false,
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Serve until SIGTERM or Ctrl-C. Prints `coltrast serve: listening on http://ADDR` on stdout once bound.
pub fn serve(settings: Settings, opts: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coltrast-http")
        .build()
        .map_err(|e| Error::internal(format!("starting the async runtime: {e}")))?;
    runtime.block_on(run(settings, opts))
}

/// The warning for a server others can reach with no key: a host that is not loopback and no API key.
pub fn exposure_warning(host: &str, has_key: bool) -> Option<String> {
    (!is_loopback(host) && !has_key).then(|| {
        format!("binding {host} (not loopback) with no API key: anyone who can reach this address can query and embed")
    })
}

async fn run(settings: Settings, opts: ServeOptions) -> Result<()> {
    if let Some(w) = exposure_warning(&opts.host, opts.api_key.is_some()) {
        tracing::warn!("{w}");
    }
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| Error::Usage(format!("--host {} --port {}: cannot bind: {e}", opts.host, opts.port)))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| Error::internal(e.to_string()))?;
    let latest = settings.artifacts_path().join("index").join("latest");
    let state = Arc::new(AppState::new(settings, opts.batch, opts.api_key.as_deref(), opts.body_limit, opts.spin));
    let app = api::router(state.clone(), opts.request_timeout);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "coltrast serve: listening on http://{addr}");
        let _ = out.flush();
    }
    tracing::info!("listening on http://{addr}");

    // The first load runs while /healthz already answers (and /readyz says 503); if it fails, so does serve.
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<Error>(1);
    {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = state.reload(true).await {
                let _ = failed_tx.send(e).await;
            }
        });
    }
    if let Some(every) = opts.watch_interval {
        tokio::spawn(watch(state.clone(), latest, every));
    }
    spawn_sighup(state.clone());

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    let mut first_load_done = false;
    let outcome = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(TokioTimer::new()).header_read_timeout(opts.header_timeout).keep_alive(true);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection: {e}");
                    }
                });
            }
            e = failed_rx.recv(), if !first_load_done => match e {
                Some(e) => break Err(e),
                None => first_load_done = true,
            },
            () = &mut stop => break Ok(()),
        }
    };
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!("in-flight requests still running after {:?}; stopping anyway", opts.shutdown_grace);
        }
    }
    outcome
}

/// Swap when `artifacts/index/latest` names another index run.
async fn watch(state: Arc<AppState>, latest: std::path::PathBuf, every: Duration) {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let mut seen = read(&latest);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = read(&latest);
        if now.is_some() && now != seen {
            seen = now;
            match state.reload(false).await {
                Ok(r) => tracing::info!("artifacts/index/latest changed: {r:?}"),
                Err(e) => tracing::error!(
                    "reload after artifacts/index/latest changed: {e} (still serving the old generation)"
                ),
            }
        }
    }
}

#[cfg(unix)]
fn spawn_sighup(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match state.reload(true).await {
                        Ok(r) => tracing::info!("SIGHUP: {r:?}"),
                        Err(e) => tracing::error!("reload on SIGHUP: {e} (still serving the old generation)"),
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_state: Arc<AppState>) {}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reachable_host_without_a_key_is_warned_about() {
        for host in ["127.0.0.1", "127.0.0.2", "::1", "localhost"] {
            assert!(is_loopback(host), "{host}");
            assert_eq!(exposure_warning(host, false), None, "{host}");
        }
        for host in ["0.0.0.0", "::", "10.1.2.3", "example.org"] {
            assert!(!is_loopback(host), "{host}");
            assert!(exposure_warning(host, false).unwrap().contains(host));
            assert_eq!(exposure_warning(host, true), None);
        }
        assert_eq!(ServeOptions::default().host, "127.0.0.1");
    }

    #[test]
    fn json_bodies_are_400_when_malformed_and_422_naming_the_field_when_mistyped() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct R {
            query: String,
            k: Option<usize>,
        }
        let e = http::parse_json::<R>(b"{\"query\": ").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        let e = http::parse_json::<R>(b"{\"query\": \"x\", \"k\": \"3\"}").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("k: "), "{}", e.message);
        let e = http::parse_json::<R>(b"{\"k\": 3}").unwrap_err();
        assert!(e.message.contains("query"), "{}", e.message);
        let e = http::parse_json::<R>(b"{\"query\": \"x\"} trailing").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(http::parse_json::<R>(b"{\"query\": \"x\"}").unwrap().query, "x");
    }
}
