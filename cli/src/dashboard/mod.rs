//! `sparkwing dashboard`: a local web dashboard over the run store.
//!
//! Read-only: every request reads through a small pool of read-only SQLite connections (WAL
//! readers never block the runs writing), and log pages tail the per-job JSONL files. One
//! background watcher polls SQLite's `data_version` every [`POLL`] and wakes the live streams
//! (server-sent events) when any process committed. The only writes are the reconciliation of
//! runs whose process died, the same as any `sparkwing runs` reader does, and a decision on an
//! approval gate (`gates`), the same as `sparkwing runs approve|reject` records. The pages'
//! HTML, the job graph and the assets are `sparkwing-dashboard`'s, shared with the cluster's
//! dashboard.

mod api;
mod db;
mod gates;
mod pages;
mod sse;

#[cfg(test)]
mod tests;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use sparkwing_engine::home::Home;
use sparkwing_engine::store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

pub use db::Db;

/// How often the server looks for new commits and new log lines.
pub const POLL: Duration = Duration::from_millis(100);

/// What `/api/health` calls this server, so `dashboard start|status|kill` know it is theirs.
pub const SERVICE: &str = "sparkwing-dashboard";

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Db>,
    pub home: Arc<Home>,
    /// Bumped by the watcher whenever the database changed.
    pub changes: tokio::sync::watch::Receiver<u64>,
}

impl AppState {
    /// State over `home`'s store, with its watcher running. Creates (and migrates) the store once
    /// so that the read-only connections can open it.
    pub fn start(home: Home) -> Result<AppState, StoreError> {
        drop(Store::open(&home.root)?);
        let db = Arc::new(Db::new(home.root.join("state.db")));
        let changes = db::spawn_watcher(db.clone(), home.clone());
        Ok(AppState {
            db,
            home: Arc::new(home),
            changes,
        })
    }
}

/// Every page, API route and asset of the dashboard.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::runs_page))
        .route("/runs", get(pages::runs_page))
        .route("/runs/{id}", get(pages::run_page))
        .route("/pipelines", get(pages::pipelines_page))
        .route("/ui/runs/stream", get(sse::ui_runs_stream))
        .route("/ui/runs/{id}/stream", get(sse::ui_run_stream))
        .route("/api/health", get(api::health))
        .route("/api/runs", get(api::list_runs))
        .route("/api/runs/stream", get(sse::api_runs_stream))
        .route("/api/runs/{id}", get(api::get_run))
        .route("/api/runs/{id}/stream", get(sse::api_run_stream))
        .route("/api/runs/{id}/events", get(api::run_events))
        .route(
            "/api/runs/{id}/gates/{gate}",
            axum::routing::post(gates::decide),
        )
        .route("/api/runs/{id}/jobs/{job}/logs", get(api::job_logs))
        .route(
            "/api/runs/{id}/jobs/{job}/logs/stream",
            get(sse::api_log_stream),
        )
        .route("/api/pipelines", get(api::pipelines))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(sparkwing_dashboard::assets())
        .fallback(pages::not_found_page)
        .with_state(state)
}

/// Serve until SIGTERM or SIGINT. `listener` is already bound.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
