//! Small HTML pieces shared by the pages and the DAG drawing: escaping, URL encoding, how a
//! state reads.

use crate::model::Job;
use sparkwing_core::JobState;
use std::fmt::Write;

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode a query or path value.
pub fn url_enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The word shown for a run status or job state (`success` reads "passed").
pub fn state_word(state: &str) -> &str {
    match state {
        "success" => "passed",
        s => s,
    }
}

/// A symbol per state, so that state never depends on colour alone.
pub fn state_icon(state: &str) -> &'static str {
    match state {
        "success" => "✓",
        "failed" => "✗",
        "running" => "▶",
        "waiting" => "⏸",
        "queued" => "…",
        "pending" => "○",
        "cancelled" => "⊘",
        "skipped" => "↷",
        "reused" | "cached" => "↺",
        _ => "?",
    }
}

/// A job's state with its reason or exit code: "failed (exit 3)", "skipped: upstream-failed".
pub fn job_state_label(j: &Job) -> String {
    let mut s = state_word(j.state.as_str()).to_string();
    let reason_has_code = j.reason.as_deref().is_some_and(|r| r.contains("exit code"));
    if j.state == JobState::Failed && !reason_has_code {
        if let Some(code) = j.exit_code {
            let _ = write!(s, " (exit {code})");
        }
    }
    if let Some(r) = j.reason.as_deref().filter(|r| !r.is_empty()) {
        let _ = write!(s, ": {r}");
    }
    if j.attempt > 1 {
        let _ = write!(s, " · attempt {}", j.attempt);
    }
    s
}
