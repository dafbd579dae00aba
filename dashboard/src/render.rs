//! The pages' HTML, whichever store the run comes from. The live parts (`runs_table`,
//! `run_sections`) are rendered here too and re-sent by the page streams, so the small script
//! only swaps HTML in.

use crate::dag;
use crate::html::{esc, job_state_label, state_icon, state_word, url_enc};
use crate::model::{Job, Run};
use serde_json::{json, Value};
use sparkwing_core::run_spec::TriggeringPullRequest;
use sparkwing_core::time::{format_utc, human_duration};
use sparkwing_core::JobState;
use std::fmt::Write;

/// A status or state as a badge: colour, symbol and word.
pub fn badge(state: &str) -> String {
    format!(
        "<span class=\"badge st-{s}\" data-state=\"{s}\"><span aria-hidden=\"true\">{icon}</span> {word}</span>",
        s = esc(state),
        icon = state_icon(state),
        word = esc(state_word(state)),
    )
}

/// A time the script shows in the browser's zone (UTC without scripts).
pub fn time_html(ms: i64) -> String {
    format!(
        "<time datetime=\"{ms}\" data-ts=\"{ms}\">{} UTC</time>",
        format_utc(ms, "%Y-%m-%d %H:%M:%S")
    )
}

/// A duration; without an end it ticks in the browser.
pub fn duration_html(start: i64, end: Option<i64>, now: i64) -> String {
    match end {
        Some(e) => format!(
            "<span class=\"dur\" data-start=\"{start}\" data-end=\"{e}\">{}</span>",
            human_duration(e - start)
        ),
        None => format!(
            "<span class=\"dur live\" data-start=\"{start}\">{}</span>",
            human_duration(now - start)
        ),
    }
}

/// The last part of a path or URL.
pub fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(path)
}

pub fn short_commit(c: &str) -> &str {
    &c[..c.len().min(10)]
}

/// An entry of the top navigation: `(href, name, key)`; the entry whose key is the page's
/// `active` one is marked current.
pub type NavItem<'a> = (&'a str, &'a str, &'a str);

/// A whole page: head, the top bar with `nav` and `extra` (after the live indicator), `body`.
pub fn page(title: &str, active: &str, nav: &[NavItem<'_>], extra: &str, body: &str) -> String {
    let mut links = String::new();
    for (href, name, key) in nav {
        let _ = write!(
            links,
            "<a href=\"{href}\"{}>{name}</a>",
            if active == *key {
                " aria-current=\"page\""
            } else {
                ""
            }
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Sparkwing</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\"><span aria-hidden=\"true\">◆</span> Sparkwing</a>\
         <nav aria-label=\"Main\">{links}</nav>\
         <span id=\"live\" class=\"conn\" role=\"status\" aria-live=\"polite\"></span>{extra}</header>\
         <main>{body}</main></body></html>",
        title = esc(title),
    )
}

/// A pull request as a run page shows it: `#12 fix → main`, `, from a fork` for a fork's.
pub fn pull_request_html(pr: &TriggeringPullRequest) -> String {
    format!(
        "<span id=\"pull-request\" data-number=\"{n}\">#{n} <code>{head}</code> → <code>{base}</code>{fork}</span>",
        n = pr.number,
        head = esc(&pr.head),
        base = esc(&pr.base),
        fork = if pr.fork { ", from a fork" } else { "" },
    )
}

/// One row of the runs table.
pub fn run_row(r: &Run, now: i64) -> String {
    let start = r.start();
    let git = match (&r.git_branch, &r.git_commit) {
        (Some(b), Some(c)) => format!(
            "<span class=\"git\">{} @ <code>{}</code></span>",
            esc(b),
            esc(short_commit(c))
        ),
        (Some(b), None) => format!("<span class=\"git\">{}</span>", esc(b)),
        (None, Some(c)) => format!("<code>{}</code>", esc(short_commit(c))),
        _ => String::new(),
    };
    format!(
        "<tr data-run=\"{id}\" data-status=\"{st}\"><td>{badge}</td>\
         <td><a class=\"run-link\" href=\"{href}\">{id}</a></td>\
         <td><a href=\"/runs?pipeline={pu}\">{pipeline}</a></td>\
         <td>{started}</td><td class=\"num\">{dur}</td>\
         <td>{who}</td>\
         <td><span title=\"{repo}\">{repo_base}</span> {git}</td></tr>",
        id = esc(&r.id),
        href = esc(&r.href),
        st = r.status.local_str(),
        badge = badge(r.status.local_str()),
        pu = url_enc(&r.pipeline),
        pipeline = esc(&r.pipeline),
        started = time_html(start),
        dur = duration_html(start, r.finished_at, now),
        who = esc(&r.who),
        repo = esc(&r.repo),
        repo_base = esc(basename(&r.repo)),
    )
}

/// What the runs list says when runs exist but none matches the filters.
pub const NO_MATCH_HTML: &str = "<p class=\"empty\" id=\"no-match\">No runs match these filters. <a href=\"/runs\">Show all runs</a>.</p>";

/// The runs table (or [`NO_MATCH_HTML`]), with a link to older runs (`more`) when the page is
/// full.
pub fn runs_table(runs: &[Run], now: i64, more: Option<&str>) -> String {
    if runs.is_empty() {
        return NO_MATCH_HTML.into();
    }
    let mut out = String::from(
        "<table class=\"runs\"><thead><tr><th scope=\"col\">Status</th><th scope=\"col\">Run</th>\
         <th scope=\"col\">Pipeline</th><th scope=\"col\">Started</th><th scope=\"col\">Duration</th>\
         <th scope=\"col\">Who</th><th scope=\"col\">Where</th></tr></thead><tbody>",
    );
    for r in runs {
        out.push_str(&run_row(r, now));
    }
    out.push_str("</tbody></table>");
    if let Some(href) = more {
        let _ = write!(
            out,
            "<p class=\"more\"><a href=\"{}\">Older runs →</a></p>",
            esc(href)
        );
    }
    out
}

/// The body of an error page.
pub fn error_body(message: &str) -> String {
    format!(
        "<h1>Error</h1><p class=\"error-box\">{}</p><p><a href=\"/\">Back to runs</a></p>",
        esc(message)
    )
}

/// The body of the page of a path that is nothing.
pub fn not_found_body(path: &str) -> String {
    format!(
        "<section class=\"empty\"><h1>Page not found</h1><p>Nothing here at <code>{}</code>.</p>\
         <p><a href=\"/\">See all runs</a></p></section>",
        esc(path)
    )
}

/// The job a run page shows the log of: the asked one, else a running one, else the first
/// failed one, else the first that ran.
pub fn default_job<'a>(jobs: &'a [Job], asked: Option<&str>) -> Option<&'a Job> {
    if let Some(a) = asked {
        if let Some(j) = jobs.iter().find(|j| j.job_id == a) {
            return Some(j);
        }
    }
    jobs.iter()
        .find(|j| j.state == JobState::Running)
        .or_else(|| jobs.iter().find(|j| j.state == JobState::Failed))
        .or_else(|| jobs.iter().find(|j| j.started_at.is_some()))
        .or_else(|| jobs.first())
}

fn summary_html(run: &Run, now: i64) -> String {
    let start = run.start();
    let mut out = format!(
        "<div class=\"run-head\"><h1><span class=\"run-status\" id=\"run-status\" data-state=\"{st}\">{badge}</span> \
         {pipeline} <span class=\"muted run-id\">{id}</span></h1></div>",
        st = run.status.local_str(),
        badge = badge(run.status.local_str()),
        pipeline = esc(&run.pipeline),
        id = esc(&run.id),
    );
    if let Some(e) = &run.error {
        let _ = write!(
            out,
            "<div class=\"error-box\" role=\"alert\"><strong>Error:</strong> {}</div>",
            esc(e)
        );
    }
    out.push_str("<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    let none = || "<span class=\"muted\">—</span>".to_string();
    fact("Started", time_html(start));
    fact("Duration", duration_html(start, run.finished_at, now));
    fact(
        "Exit code",
        run.exit_code
            .map(|c| format!("<code>{c}</code>"))
            .unwrap_or_else(none),
    );
    fact(
        "Who",
        match run.pid {
            Some(pid) => format!("{} <span class=\"muted\">(pid {pid})</span>", esc(&run.who)),
            None => esc(&run.who),
        },
    );
    fact(
        "Repository",
        format!(
            "<span title=\"{}\">{}</span>",
            esc(&run.repo),
            esc(&run.repo)
        ),
    );
    fact(
        "Branch",
        run.git_branch.as_deref().map(esc).unwrap_or_else(none),
    );
    fact(
        "Commit",
        run.git_commit
            .as_deref()
            .map(|c| format!("<code title=\"{}\">{}</code>", esc(c), esc(short_commit(c))))
            .unwrap_or_else(none),
    );
    if let Some(pr) = &run.pull_request {
        fact("Pull request", pull_request_html(pr));
    }
    fact(
        "Entrypoint",
        format!(
            "<code>{}</code> <span class=\"muted\">({})</span>",
            esc(&run.entrypoint),
            esc(&run.runner)
        ),
    );
    out.push_str("</dl>");
    out.push_str("<h2>Args</h2>");
    match run.args.as_object().filter(|o| !o.is_empty()) {
        None => out.push_str("<p class=\"muted\">No args.</p>"),
        Some(o) => {
            out.push_str("<table class=\"args\"><tbody>");
            for (k, v) in o {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                let _ = write!(
                    out,
                    "<tr><th scope=\"row\"><code>--{}</code></th><td><code>{}</code></td></tr>",
                    esc(k),
                    esc(&shown)
                );
            }
            out.push_str("</tbody></table><p class=\"muted small\">Secret values are masked before they are recorded.</p>");
        }
    }
    out
}

fn timeline_html(run: &Run, jobs: &[Job], now: i64) -> String {
    if jobs.is_empty() {
        return "<p class=\"muted\">No jobs yet.</p>".into();
    }
    let t0 = run.start();
    let ends = jobs.iter().filter_map(|j| j.finished_at);
    let t1 = run
        .finished_at
        .unwrap_or(now)
        .max(ends.max().unwrap_or(t0))
        .max(t0 + 1);
    let span = (t1 - t0) as f64;
    let mut out =
        String::from("<div class=\"timeline\" role=\"table\" aria-label=\"Job timeline\">");
    let _ = write!(
        out,
        "<div class=\"tl-axis\" role=\"row\"><span role=\"columnheader\">Job</span><span role=\"columnheader\" class=\"tl-scale\"><span>0s</span><span>{}</span></span><span role=\"columnheader\">Time</span></div>",
        human_duration(t1 - t0)
    );
    for j in jobs {
        let label = job_state_label(j);
        let (bar, dur) = match j.started_at {
            Some(s) => {
                let e = j.finished_at.unwrap_or(now).max(s);
                let left = ((s - t0).max(0) as f64 / span * 100.0).min(100.0);
                let width = ((e - s) as f64 / span * 100.0).min(100.0 - left).max(0.4);
                (
                    format!(
                        "<span class=\"tl-bar st-{st}\" style=\"left:{left:.2}%;width:{width:.2}%\" title=\"{id}: {label}, {d}\"></span>",
                        st = j.state.as_str(),
                        id = esc(&j.job_id),
                        label = esc(&label),
                        d = human_duration(e - s),
                    ),
                    duration_html(s, j.finished_at, now),
                )
            }
            None => (
                format!("<span class=\"tl-none\">{}</span>", esc(&label)),
                "<span class=\"muted\">—</span>".to_string(),
            ),
        };
        let _ = write!(
            out,
            "<div class=\"tl-row\" role=\"row\" data-job=\"{id}\"><span role=\"cell\" class=\"tl-name\">{b}<a href=\"?job={idu}#logs\">{id}</a></span><span role=\"cell\" class=\"tl-track\">{bar}</span><span role=\"cell\" class=\"num\">{dur}</span></div>",
            id = esc(&j.job_id),
            idu = url_enc(&j.job_id),
            b = format_args!("<span class=\"mini st-{}\" title=\"{}\" aria-label=\"{}\">{}</span> ", j.state.as_str(), esc(&label), esc(&label), state_icon(j.state.as_str())),
        );
    }
    out.push_str("</div>");
    out
}

fn job_tabs_html(jobs: &[Job], selected: Option<&str>) -> String {
    let mut out = String::from("<ul class=\"job-tabs\">");
    for j in jobs {
        let cur = selected == Some(j.job_id.as_str());
        let _ = write!(
            out,
            "<li><a href=\"?job={idu}#logs\" class=\"st-{st}\"{cur} data-job=\"{id}\"><span aria-hidden=\"true\">{icon}</span> {id} <span class=\"visually-hidden\">({label})</span></a></li>",
            idu = url_enc(&j.job_id),
            st = j.state.as_str(),
            cur = if cur { " aria-current=\"true\"" } else { "" },
            id = esc(&j.job_id),
            icon = state_icon(j.state.as_str()),
            label = esc(&job_state_label(j)),
        );
    }
    out.push_str("</ul>");
    out
}

/// The live sections of a run page, as HTML by section id (`gates`: what the source renders of
/// the run's approval gates, empty without).
pub fn run_sections(
    run: &Run,
    jobs: &[Job],
    gates_html: String,
    selected: Option<&str>,
    now: i64,
) -> Value {
    let sel = default_job(jobs, selected).map(|j| j.job_id.clone());
    let sel_job = sel
        .as_deref()
        .and_then(|s| jobs.iter().find(|j| j.job_id == s));
    json!({
        "status": run.status.local_str(),
        "terminal": run.status.is_terminal(),
        "title": format!("{} {} · {}", state_icon(run.status.local_str()), run.pipeline, state_word(run.status.local_str())),
        "sections": {
            "summary": summary_html(run, now),
            "gates": gates_html,
            "dag": dag::svg(jobs, sel.as_deref()),
            "timeline": timeline_html(run, jobs, now),
            "job-tabs": job_tabs_html(jobs, sel.as_deref()),
            "log-job-state": sel_job.map(|j| {
                let label = job_state_label(j);
                let detail = label.strip_prefix(state_word(j.state.as_str())).unwrap_or(&label);
                let detail = detail.trim_start_matches([':', ' ']);
                format!("{} <span class=\"muted\">{}</span>", badge(j.state.as_str()), esc(detail))
            }).unwrap_or_default(),
        }
    })
}

/// What a run page holds besides the live sections.
pub struct RunPageParts<'a> {
    /// The page's event stream (`view`, `logs`, `log-end`, `done` events).
    pub stream: &'a str,
    /// The job whose log the page shows.
    pub selected: Option<&'a str>,
    /// Buttons for the run (e.g. Cancel), shown under the summary; empty for none.
    pub actions: &'a str,
    /// Sections between the timeline and the logs (e.g. artifacts); empty for none.
    pub extra: &'a str,
    /// A link to the selected job's log as JSON.
    pub log_json: Option<&'a str>,
}

/// The body of a run page from its [`run_sections`] answer `v`.
pub fn run_body(run: &Run, v: &Value, parts: &RunPageParts<'_>) -> String {
    let sec = |k: &str| v["sections"][k].as_str().unwrap_or_default().to_string();
    let sel = parts.selected;
    let mut body = format!(
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"/\">Runs</a> › <a href=\"/runs?pipeline={pu}\">{p}</a> › <span>{id}</span></nav>\
         <div id=\"run\" data-stream=\"{stream}\" data-run=\"{id}\" data-job=\"{job}\" data-terminal=\"{term}\">\
         <section id=\"summary\" data-section=\"summary\">{summary}</section>{actions}\
         <section id=\"gates\" data-section=\"gates\">{gates}</section>\
         <section aria-labelledby=\"h-dag\"><h2 id=\"h-dag\">Jobs</h2><div class=\"dag-wrap\" id=\"dag\" data-section=\"dag\">{dag}</div></section>\
         <section aria-labelledby=\"h-tl\"><h2 id=\"h-tl\">Timeline</h2><div id=\"timeline\" data-section=\"timeline\">{tl}</div></section>",
        pu = url_enc(&run.pipeline),
        p = esc(&run.pipeline),
        id = esc(&run.id),
        stream = esc(parts.stream),
        job = esc(sel.unwrap_or("")),
        term = run.status.is_terminal(),
        summary = sec("summary"),
        actions = parts.actions,
        gates = sec("gates"),
        dag = sec("dag"),
        tl = sec("timeline"),
    );
    body.push_str(parts.extra);
    let _ = write!(
        body,
        "<section id=\"logs\" aria-labelledby=\"h-logs\"><h2 id=\"h-logs\">Logs</h2>\
         <nav aria-label=\"Job logs\" data-section=\"job-tabs\">{tabs}</nav>",
        tabs = sec("job-tabs")
    );
    match sel {
        None => body.push_str("<p class=\"muted\">No jobs yet.</p>"),
        Some(job) => {
            let json_link = parts
                .log_json
                .map(|href| format!("<a href=\"{}\" class=\"small\">JSON</a>", esc(href)))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<div class=\"log-head\"><h3 class=\"log-title\"><code>{job}</code> <span data-section=\"log-job-state\">{st}</span></h3>\
                 <div class=\"log-tools\"><label for=\"log-search\" class=\"visually-hidden\">Search this log</label>\
                 <input type=\"search\" id=\"log-search\" placeholder=\"Search this log\" autocomplete=\"off\">\
                 <span id=\"log-matches\" class=\"muted\" aria-live=\"polite\"></span>\
                 <label class=\"follow\"><input type=\"checkbox\" id=\"log-follow\" checked> Follow</label>\
                 {json_link}</div></div>\
                 <div id=\"log\" class=\"log\" role=\"log\" aria-label=\"Log of {job}\" tabindex=\"0\"></div>\
                 <p id=\"log-status\" class=\"muted small\">Loading the log…</p>",
                job = esc(job),
                st = sec("log-job-state"),
            );
        }
    }
    body.push_str("</section></div>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::RunPhase;

    fn run(pull_request: Option<TriggeringPullRequest>) -> Run {
        Run {
            id: "ci/b-1".into(),
            href: "/runs/ci/b-1".into(),
            pipeline: "build".into(),
            entrypoint: "build".into(),
            runner: "kubernetes".into(),
            status: RunPhase::Running,
            args: Value::Null,
            repo: "https://example.com/acme/app.git".into(),
            git_branch: Some("fix".into()),
            git_commit: Some("0123456789abcdef".into()),
            who: "webhook:ana".into(),
            pid: None,
            created_at: 1_000,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            pull_request,
        }
    }

    #[test]
    fn the_summary_names_the_pull_request_of_a_run_started_by_one() {
        let pr = TriggeringPullRequest {
            number: 12,
            base: "main".into(),
            head: "fix<1>".into(),
            fork: false,
        };
        let html = summary_html(&run(Some(pr.clone())), 2_000);
        assert!(
            html.contains("<dt>Pull request</dt><dd><span id=\"pull-request\" data-number=\"12\">#12 <code>fix&lt;1&gt;</code> → <code>main</code></span></dd>"),
            "{html}"
        );
        let fork = summary_html(
            &run(Some(TriggeringPullRequest { fork: true, ..pr })),
            2_000,
        );
        assert!(
            fork.contains("<code>main</code>, from a fork</span>"),
            "{fork}"
        );
        let none = summary_html(&run(None), 2_000);
        assert!(!none.contains("Pull request"), "{none}");
    }
}
