//! A run page's approval gates section, for both dashboards: each gate's message and state, who
//! decided when and why, and on a waiting gate of a live run a comment field with Approve and
//! Reject buttons for a viewer who may decide. Where the buttons post differs ([`GateButtons`]):
//! the local dashboard's page script posts JSON, the cluster's page posts an HTML form with the
//! session's CSRF token.

use crate::html::{esc, url_enc};
use crate::model::Gate;
use sparkwing_core::gate;
use sparkwing_core::JobState;
use std::fmt::Write;

/// What a viewer gets on a waiting gate of a live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateButtons<'a> {
    /// No buttons: the viewer may not decide (the gate still says it waits).
    Hidden,
    /// Buttons the page script posts as JSON (`{"decision", "comment"}`) to `{base}/{gate}`
    /// (the local dashboard: `/api/runs/{id}/gates`).
    Script { base: &'a str },
    /// A form that posts `decision`, `comment` and `csrf` to `{base}/{gate}` (the cluster
    /// dashboard: `/runs/{ns}/{name}/gates`), without any script.
    Form { base: &'a str, csrf: &'a str },
}

/// The gates section (empty without gates). `live`: the run has not finished, so a waiting gate
/// can still be decided.
pub fn gates_html(gates: &[Gate], live: bool, buttons: GateButtons<'_>) -> String {
    if gates.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2 id=\"h-gates\">Approval gates</h2><ul class=\"gates\">");
    for g in gates {
        let message = g
            .message
            .as_deref()
            .map(|m| format!(" <span class=\"gate-message\">{}</span>", esc(m)))
            .unwrap_or_default();
        let body = match (&g.decided, g.state) {
            (Some(d), _) => format!(
                "<span class=\"gate-decided\" data-decision=\"{}\">{}</span> <time data-ts=\"{}\"></time>",
                d.decision,
                esc(&gate::reason(d)),
                d.at_ms
            ),
            (None, JobState::Waiting) if live => {
                let mut w = String::from("<span class=\"gate-waiting\">waiting for a decision</span>");
                w.push_str(&decide_html(&g.gate, buttons));
                w
            }
            (None, state) => format!("<span class=\"muted\">{state}</span>"),
        };
        let _ = write!(
            out,
            "<li data-gate-id=\"{}\"><code>{}</code>{message} {body}</li>",
            esc(&g.gate),
            esc(&g.gate)
        );
    }
    out.push_str("</ul>");
    out
}

/// The comment field and the two buttons of a waiting gate, as `buttons` says.
fn decide_html(gate: &str, buttons: GateButtons<'_>) -> String {
    let comment = |name: &str| {
        format!(
            "<label class=\"visually-hidden\" for=\"gate-comment-{g}\">Comment</label>\
             <input type=\"text\" id=\"gate-comment-{g}\"{name} class=\"gate-comment\" placeholder=\"Comment (optional)\">",
            g = esc(gate)
        )
    };
    match buttons {
        GateButtons::Hidden => String::new(),
        GateButtons::Script { base } => format!(
            " <span class=\"gate-form\" data-gate=\"{g}\" data-gate-url=\"{base}/{gu}\">{c}\
             <button type=\"button\" data-gate-decision=\"approve\">Approve</button> \
             <button type=\"button\" data-gate-decision=\"reject\">Reject</button>\
             <span class=\"gate-result muted\" aria-live=\"polite\"></span></span>",
            g = esc(gate),
            base = esc(base),
            gu = url_enc(gate),
            c = comment(""),
        ),
        GateButtons::Form { base, csrf } => format!(
            " <form class=\"gate-form\" method=\"post\" action=\"{base}/{gu}\" data-gate=\"{g}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{c}\
             <button type=\"submit\" name=\"decision\" value=\"approve\" data-gate-decision=\"approve\">Approve</button> \
             <button type=\"submit\" name=\"decision\" value=\"reject\" data-gate-decision=\"reject\">Reject</button></form>",
            g = esc(gate),
            base = esc(base),
            gu = url_enc(gate),
            csrf = esc(csrf),
            c = comment(" name=\"comment\""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::gate::{Decided, Decision};

    fn gate(id: &str, state: JobState, decided: Option<Decided>) -> Gate {
        Gate {
            gate: id.into(),
            message: Some("Ship <it>?".into()),
            state,
            decided,
        }
    }

    #[test]
    fn a_waiting_gate_gets_the_buttons_its_viewer_may_use() {
        let gates = [gate("approve-prod", JobState::Waiting, None)];
        let script = gates_html(
            &gates,
            true,
            GateButtons::Script {
                base: "/api/runs/run-1/gates",
            },
        );
        assert!(script.contains("Ship &lt;it&gt;?"), "{script}");
        assert!(
            script.contains("data-gate-url=\"/api/runs/run-1/gates/approve-prod\""),
            "{script}"
        );
        assert!(script.contains("type=\"button\" data-gate-decision=\"approve\""));
        assert!(!script.contains("<form"), "{script}");

        let form = gates_html(
            &gates,
            true,
            GateButtons::Form {
                base: "/runs/ci/b-1/gates",
                csrf: "c\"1",
            },
        );
        assert!(
            form.contains("<form class=\"gate-form\" method=\"post\" action=\"/runs/ci/b-1/gates/approve-prod\""),
            "{form}"
        );
        assert!(form.contains("name=\"csrf\" value=\"c&quot;1\""), "{form}");
        assert!(form.contains("name=\"comment\""), "{form}");
        assert!(
            form.contains("name=\"decision\" value=\"reject\""),
            "{form}"
        );
        assert!(!form.contains("data-gate-url"), "{form}");

        let hidden = gates_html(&gates, true, GateButtons::Hidden);
        assert!(hidden.contains("waiting for a decision"), "{hidden}");
        assert!(!hidden.contains("data-gate-decision"), "{hidden}");
        // A finished run's waiting gate can no longer be decided.
        let done = gates_html(
            &gates,
            false,
            GateButtons::Form {
                base: "/runs/ci/b-1/gates",
                csrf: "c",
            },
        );
        assert!(!done.contains("data-gate-decision"), "{done}");
        assert!(done.contains(">waiting</span>"), "{done}");
    }

    #[test]
    fn a_decided_gate_says_who_when_and_why_and_no_gates_no_section() {
        let d = Decided {
            decision: Decision::Reject,
            by: "ana@example.com".into(),
            at_ms: 1_000,
            comment: Some("not today".into()),
            timed_out: false,
        };
        let html = gates_html(
            &[gate("approve-prod", JobState::Failed, Some(d))],
            true,
            GateButtons::Hidden,
        );
        assert!(
            html.contains("data-decision=\"reject\">rejected by ana@example.com: not today</span> <time data-ts=\"1000\">"),
            "{html}"
        );
        assert_eq!(gates_html(&[], true, GateButtons::Hidden), "");
    }
}
