//! The run page's job graph: a layered layout (a job's column is the longest path to it from a
//! job without needs; `finally` jobs come last) drawn as inline SVG.

use crate::html::{esc, job_state_label, state_icon, url_enc};
use crate::model::Job;
use std::collections::HashMap;
use std::fmt::Write;

const NODE_W: i64 = 200;
const NODE_H: i64 = 50;
const COL_GAP: i64 = 56;
const ROW_GAP: i64 = 14;
const PAD: i64 = 8;

/// The job `id` was expanded from (`test` for `test[3]`), when that template is among `jobs`.
fn template_of<'a>(jobs: &[Job], id: &'a str) -> Option<&'a str> {
    let (template, _) = sparkwing_core::fanout::split_expanded_id(id)?;
    jobs.iter()
        .any(|j| j.job_id == template)
        .then_some(template)
}

/// Each job's edges in the graph: its needs, except that a fan-out's or matrix's jobs hang from
/// their template, and a job that needs the template comes after all of them (edges from each).
pub fn graph_needs(jobs: &[Job]) -> Vec<Vec<String>> {
    let expanded: Vec<Option<&str>> = jobs.iter().map(|j| template_of(jobs, &j.job_id)).collect();
    jobs.iter()
        .zip(&expanded)
        .map(|(j, template)| {
            if let Some(t) = template {
                return vec![t.to_string()];
            }
            let mut out = Vec::new();
            for n in &j.needs {
                let of_n: Vec<&str> = jobs
                    .iter()
                    .zip(&expanded)
                    .filter(|(_, t)| **t == Some(n.as_str()))
                    .map(|(e, _)| e.job_id.as_str())
                    .collect();
                if of_n.is_empty() {
                    out.push(n.clone());
                } else {
                    out.extend(of_n.into_iter().map(str::to_string));
                }
            }
            out
        })
        .collect()
}

/// Whether a job is a fan-out or matrix template: its jobs `ID[i]` are listed, or it recorded
/// its expansion.
fn is_template(jobs: &[Job], job: &Job) -> bool {
    job.reason
        .as_deref()
        .is_some_and(|r| r.starts_with("fanned out into "))
        || jobs
            .iter()
            .any(|j| template_of(jobs, &j.job_id) == Some(job.job_id.as_str()))
}

/// Each job's column (0-based), in `jobs` order.
pub fn layers(jobs: &[Job]) -> Vec<usize> {
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.job_id.as_str(), i))
        .collect();
    let needs = graph_needs(jobs);
    let mut layer = vec![0usize; jobs.len()];
    // Relax edges until stable; the bound keeps a (never expected) cycle from spinning.
    for _ in 0..=jobs.len() {
        let mut changed = false;
        for (i, needs) in needs.iter().enumerate() {
            for n in needs {
                if let Some(&k) = index.get(n.as_str()) {
                    if k != i && layer[i] < layer[k] + 1 && layer[k] < jobs.len() {
                        layer[i] = layer[k] + 1;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let last_regular = jobs
        .iter()
        .zip(&layer)
        .filter(|(j, _)| !j.is_finally)
        .map(|(_, l)| *l)
        .max();
    if let Some(last) = last_regular {
        for (j, l) in jobs.iter().zip(layer.iter_mut()) {
            if j.is_finally && *l <= last {
                *l = last + 1;
            }
        }
    }
    layer
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The graph as an `<svg>` element; each job links to its log (`?job=ID`).
pub fn svg(jobs: &[Job], selected: Option<&str>) -> String {
    if jobs.is_empty() {
        return "<p class=\"muted\">No jobs yet: the pipeline is still planning.</p>".into();
    }
    let layer = layers(jobs);
    let cols = layer.iter().max().copied().unwrap_or(0) + 1;
    let mut row_of = vec![0i64; jobs.len()];
    let mut rows_in = vec![0i64; cols];
    for (i, l) in layer.iter().enumerate() {
        row_of[i] = rows_in[*l];
        rows_in[*l] += 1;
    }
    let max_rows = rows_in.iter().max().copied().unwrap_or(1);
    let width = PAD * 2 + cols as i64 * NODE_W + (cols as i64 - 1) * COL_GAP;
    let height = PAD * 2 + max_rows * NODE_H + (max_rows - 1) * ROW_GAP;
    // Centre short columns vertically.
    let pos = |i: usize| -> (i64, i64) {
        let l = layer[i];
        let offset = (max_rows - rows_in[l]) * (NODE_H + ROW_GAP) / 2;
        (
            PAD + l as i64 * (NODE_W + COL_GAP),
            PAD + offset + row_of[i] * (NODE_H + ROW_GAP),
        )
    };
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.job_id.as_str(), i))
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"dag\" role=\"group\" aria-label=\"Job graph\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" class=\"arrowhead\"/></marker></defs>"
    );
    let needs = graph_needs(jobs);
    for (i, j) in jobs.iter().enumerate() {
        let fanned = template_of(jobs, &j.job_id).is_some();
        for n in &needs[i] {
            let Some(&k) = index.get(n.as_str()) else {
                continue;
            };
            let (x1, y1) = pos(k);
            let (x2, y2) = pos(i);
            let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
            let (ex, ey) = (x2 - 2, y2 + NODE_H / 2);
            let mid = (sx + ex) / 2;
            let _ = write!(
                out,
                "<path class=\"edge{fan}\" data-from=\"{}\" data-to=\"{}\" d=\"M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}\" marker-end=\"url(#arrow)\"><title>{}</title></path>",
                esc(n),
                esc(&j.job_id),
                esc(&if fanned {
                    format!("{n} fanned out into {}", j.job_id)
                } else {
                    format!("{} needs {n}", j.job_id)
                }),
                fan = if fanned { " fan" } else { "" },
            );
        }
    }
    for (i, j) in jobs.iter().enumerate() {
        let (x, y) = pos(i);
        let label = job_state_label(j);
        let mut tags = Vec::new();
        if j.optional {
            tags.push("optional");
        }
        if j.is_finally {
            tags.push("finally");
        }
        let template = is_template(jobs, j);
        if template {
            tags.push("fan-out");
        }
        let shown = if template {
            format!("{}[*]", j.job_id)
        } else {
            j.job_id.clone()
        };
        let sel = selected == Some(j.job_id.as_str());
        let tag_text = if tags.is_empty() {
            String::new()
        } else {
            format!(" · {}", tags.join(", "))
        };
        let _ = write!(
            out,
            "<a href=\"?job={id_url}#logs\" class=\"node st-{state}{sel}{fin}\" data-job=\"{id}\" data-state=\"{state}\" aria-label=\"{id}: {label}{tag_text}\">\
             <title>{id}: {label}{tag_text}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"7\"/>\
             <text x=\"{tx}\" y=\"{ty1}\" class=\"node-name\">{icon} {name}</text>\
             <text x=\"{rx}\" y=\"{ty1}\" class=\"node-tag\" text-anchor=\"end\">{tag_short}</text>\
             <text x=\"{tx}\" y=\"{ty2}\" class=\"node-state\">{short_label}</text></a>",
            id_url = url_enc(&j.job_id),
            state = j.state.as_str(),
            sel = if sel { " selected" } else { "" },
            fin = if j.is_finally { " finally" } else { "" },
            id = esc(&j.job_id),
            label = esc(&label),
            icon = state_icon(j.state.as_str()),
            name = esc(&short(&shown, if tags.is_empty() { 22 } else { 14 })),
            short_label = esc(&short(&label, 29)),
            tag_short = tags.join(" "),
            rx = x + NODE_W - 8,
            tx = x + 10,
            ty1 = y + 20,
            ty2 = y + 38,
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_core::JobState;

    fn job(id: &str, needs: &[&str], finally: bool) -> Job {
        let mut j = Job::new(id, JobState::Pending);
        j.needs = needs.iter().map(|s| s.to_string()).collect();
        j.is_finally = finally;
        j
    }

    #[test]
    fn dashboard_layers_are_longest_paths_and_finally_last() {
        let jobs = vec![
            job("greet", &[], false),
            job("build", &[], false),
            job("test", &["build", "greet"], false),
            job("deploy", &["test"], false),
            job("lint", &[], false),
            job("slow", &["build"], false),
            job("after", &["deploy", "slow"], false),
            job("cleanup", &[], true),
        ];
        assert_eq!(layers(&jobs), vec![0, 0, 1, 2, 0, 1, 3, 4]);
        let svg = svg(&jobs, Some("test"));
        assert_eq!(svg.matches("class=\"edge\"").count(), 6);
        assert!(svg.contains("node st-pending selected"));
    }

    #[test]
    fn dashboard_layers_survive_a_cycle() {
        let jobs = vec![job("a", &["b"], false), job("b", &["a"], false)];
        assert_eq!(layers(&jobs).len(), 2);
    }

    #[test]
    fn a_fan_outs_jobs_hang_from_their_template_and_the_fan_in_follows_them() {
        let mut t = job("test", &["shards"], false);
        t.reason = Some("fanned out into 2 jobs (test[0] … test[1])".into());
        let jobs = vec![
            job("shards", &[], false),
            t,
            job("report", &["test"], false),
            job("test[0]", &["shards"], false),
            job("test[1]", &["shards"], false),
        ];
        assert_eq!(layers(&jobs), vec![0, 1, 3, 2, 2]);
        assert_eq!(graph_needs(&jobs)[2], ["test[0]", "test[1]"]);
        let svg = svg(&jobs, Some("test[1]"));
        assert_eq!(svg.matches("class=\"edge fan\"").count(), 2);
        assert!(
            svg.contains("<title>test fanned out into test[0]</title>"),
            "{svg}"
        );
        assert!(svg.contains("test[*]"), "{svg}");
        assert!(svg.contains("href=\"?job=test%5B1%5D#logs\""), "{svg}");
        // Zero jobs: the template is still shown as one, and its dependents need it.
        let mut t = job("test", &["shards"], false);
        t.reason = Some("fanned out into 0 jobs".into());
        let jobs = vec![
            job("shards", &[], false),
            t,
            job("report", &["test"], false),
        ];
        assert_eq!(layers(&jobs), vec![0, 1, 2]);
        assert!(svg_has_template(&jobs));
    }

    fn svg_has_template(jobs: &[Job]) -> bool {
        svg(jobs, None).contains("test[*]")
    }
}
