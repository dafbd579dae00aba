//! The dashboard's pages, one code base for both dashboards: `sparkwing dashboard` (the CLI,
//! over the local SQLite run store) and the cluster's (the API at `/`, over its state layer).
//! Each server reads its own store into [`model`]'s [`Run`](model::Run) and [`Job`](model::Job),
//! renders with [`render`], [`dag`] and [`gates`] (a run's approval gates and their buttons), serves the same [`assets`] and runs the same page script
//! (`assets/app.js`: the runs list's `list` events; a run page's `view`, `logs`, `log-end` and
//! `done` events).

pub mod artifacts;
pub mod dag;
pub mod gates;
pub mod html;
pub mod model;
pub mod render;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The stylesheet.
pub const APP_CSS: &str = include_str!("../assets/app.css");
/// The page script (plain JavaScript, no build step).
pub const APP_JS: &str = include_str!("../assets/app.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/assets/app.css` and `/assets/app.js`, merged into either server's router.
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
}
