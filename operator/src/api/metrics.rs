//! The API's Prometheus metrics, at the API's `/metrics`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sparkwing_api_requests_total` | counter | `method`, `route`, `code` |
//! | `sparkwing_api_uploads_total` | counter | |
//! | `sparkwing_api_blobs_written_total` | counter | |
//! | `sparkwing_api_blob_bytes_total` | counter | |
//! | `sparkwing_api_log_lines_total` | counter | |
//! | `sparkwing_api_runs_triggered_total` | counter | |
//! | `sparkwing_api_gc_blobs_deleted_total` | counter | |
//! | `sparkwing_api_webhook_deliveries_total` | counter | |
//! | `sparkwing_api_webhook_runs_created_total` | counter | |
//! | `sparkwing_api_webhook_ignored_total` | counter | |
//! | `sparkwing_api_webhook_redeliveries_total` | counter | |
//! | `sparkwing_api_webhook_rejected_total` | counter | |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    pub uploads: AtomicU64,
    pub blobs_written: AtomicU64,
    pub blob_bytes: AtomicU64,
    pub log_lines: AtomicU64,
    pub runs_triggered: AtomicU64,
    pub gc_blobs_deleted: AtomicU64,
    pub webhook_deliveries: AtomicU64,
    pub webhook_runs_created: AtomicU64,
    pub webhook_ignored: AtomicU64,
    pub webhook_redeliveries: AtomicU64,
    pub webhook_rejected: AtomicU64,
}

impl ApiMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn request(&self, method: &'static str, route: &str, code: u16) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method, route.to_string(), code)).or_default() += 1;
        }
    }

    /// Requests counted for `route` answered with `code` (tests).
    pub fn requests(&self, route: &str, code: u16) -> u64 {
        self.requests.lock().map_or(0, |r| {
            r.iter()
                .filter(|((_, rt, c), _)| rt == route && *c == code)
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Distinct `sparkwing_api_requests_total` series (tests).
    pub fn request_series(&self) -> usize {
        self.requests.lock().map_or(0, |r| r.len())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP sparkwing_api_requests_total API requests, by method, route and status code.\n# TYPE sparkwing_api_requests_total counter"
        );
        if let Ok(r) = self.requests.lock() {
            for ((method, route, code), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "sparkwing_api_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}} {n}"
                );
            }
        }
        for (name, help, v) in [
            (
                "sparkwing_api_uploads_total",
                "Upload manifests accepted.",
                &self.uploads,
            ),
            (
                "sparkwing_api_blobs_written_total",
                "Blobs stored (not counting ones already present).",
                &self.blobs_written,
            ),
            (
                "sparkwing_api_blob_bytes_total",
                "Bytes of blobs stored, uncompressed.",
                &self.blob_bytes,
            ),
            (
                "sparkwing_api_log_lines_total",
                "Log lines stored (not counting duplicates).",
                &self.log_lines,
            ),
            (
                "sparkwing_api_runs_triggered_total",
                "PipelineRuns created through the API.",
                &self.runs_triggered,
            ),
            (
                "sparkwing_api_gc_blobs_deleted_total",
                "Blobs deleted by garbage collection.",
                &self.gc_blobs_deleted,
            ),
            (
                "sparkwing_api_webhook_deliveries_total",
                "Webhook deliveries with a valid signature.",
                &self.webhook_deliveries,
            ),
            (
                "sparkwing_api_webhook_runs_created_total",
                "PipelineRuns created by webhook deliveries.",
                &self.webhook_runs_created,
            ),
            (
                "sparkwing_api_webhook_ignored_total",
                "Webhook deliveries that started nothing (tags, deletions, other events, no matching Pipeline).",
                &self.webhook_ignored,
            ),
            (
                "sparkwing_api_webhook_redeliveries_total",
                "Webhook deliveries seen before (answered with the runs they created).",
                &self.webhook_redeliveries,
            ),
            (
                "sparkwing_api_webhook_rejected_total",
                "Webhook deliveries refused (no secret configured, bad signature, malformed payload, errors).",
                &self.webhook_rejected,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The `method` label: one of the standard methods, else `other`. A client may send any token as
/// a method (a 405 answers it), and each distinct one would otherwise be a new series kept forever.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware counting requests by method (standard ones; `other`), route template (`unmatched`
/// when no route matched) and status code: label values come from fixed sets, never from the
/// request's text.
pub async fn track(State(m): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let res = next.run(req).await;
    m.request(method, &route, res.status().as_u16());
    res
}
