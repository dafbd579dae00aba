//! A run's artifacts on its page, for both dashboards: name, job, path (when known), size and
//! how to download it — the local dashboard shows the `sparkwing runs artifacts` command, the
//! cluster's links to its download route.

use std::fmt::Write;

use sparkwing_core::artifact::human_bytes;

use crate::html::esc;

/// How an artifact is downloaded from the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// A command to run (the local dashboard).
    Command(String),
    /// A link to follow, and the file name it saves as (the cluster dashboard).
    Link { href: String, file: String },
}

/// One artifact of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub job: String,
    pub name: String,
    /// Where its job published it from (relative to its working directory), when known.
    pub path: Option<String>,
    pub size_bytes: u64,
    pub download: Download,
}

/// The run page's section listing `rows` (empty when there is none).
pub fn section(rows: &[ArtifactRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut body = String::new();
    for a in rows {
        let download = match &a.download {
            Download::Command(c) => format!("<code>{}</code>", esc(c)),
            Download::Link { href, file } => format!(
                "<a href=\"{}\" download=\"{}\">Download</a>",
                esc(href),
                esc(file)
            ),
        };
        let _ = write!(
            body,
            "<tr><td><code>{name}</code></td><td>{job}</td><td><code>{path}</code></td><td class=\"num\">{size}</td>\
             <td>{download}</td></tr>",
            name = esc(&a.name),
            job = esc(&a.job),
            path = esc(a.path.as_deref().unwrap_or("")),
            size = esc(&human_bytes(a.size_bytes)),
        );
    }
    format!(
        "<section id=\"artifacts\" aria-labelledby=\"h-artifacts\"><h2 id=\"h-artifacts\">Artifacts</h2>\
         <table><thead><tr><th>Name</th><th>Job</th><th>Path</th><th>Size</th><th>Download</th></tr></thead>\
         <tbody>{body}</tbody></table></section>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_size_and_download() {
        assert_eq!(section(&[]), "");
        let html = section(&[
            ArtifactRow {
                job: "build".into(),
                name: "app".into(),
                path: Some("dist/app".into()),
                size_bytes: 2048,
                download: Download::Command(
                    "sparkwing runs artifacts --run r --download build/app".into(),
                ),
            },
            ArtifactRow {
                job: "build".into(),
                name: "<x>".into(),
                path: None,
                size_bytes: 5,
                download: Download::Link {
                    href: "/runs/ci/r/artifacts/build/x".into(),
                    file: "x.tar".into(),
                },
            },
        ]);
        assert!(html.contains("<td class=\"num\">2.0 KiB</td>"), "{html}");
        assert!(html.contains("<code>sparkwing runs artifacts --run r --download build/app</code>"));
        assert!(html
            .contains("<a href=\"/runs/ci/r/artifacts/build/x\" download=\"x.tar\">Download</a>"));
        assert!(html.contains("&lt;x&gt;"));
    }
}
