//! Webhook delivery → the `pending` commit status posted to GitHub (issue 18's figure), on the
//! test bed. Prints figures; asserts no timing.
//!
//!     cargo build -p sparkwing-cli --bin sparkwing
//!     cargo run -p sparkwing-e2e --example bench_webhook_status -- --rounds 20
//!
//! 1. Starts the test bed with the operator and its API in this process (`PushCluster`: the real
//!    runner's pool and a git server hosting the loop fixture), and a loopback GitHub REST API
//!    (`LoopbackGitHub`) that the operator posts commit statuses to.
//! 2. A Pipeline started by pull requests into `main`, `cancelInProgress: true` (each round's run
//!    supersedes the previous one, so runs do not pile up), with a token Secret for the statuses.
//! 3. Each round commits a change to the pull request's branch, pushes it, delivers a signed
//!    `pull_request` `synchronize` event and times delivery sent → the `pending` status of that
//!    commit received by the loopback GitHub (the API creates the run; the operator's commit
//!    status controller sees it and posts).
//! 4. Prints every round, p50 and p99.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use kube::Api;
use serde_json::json;
use sparkwing_e2e::webhook::{deliver, pull_request_payload, sign, LoopbackGitHub, PushCluster};

const WAIT: Duration = Duration::from_secs(60);

fn parse_rounds() -> Result<usize> {
    let mut rounds = 20;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds takes a number")?;
            }
            other => anyhow::bail!("unknown argument {other:?}; usage: [--rounds N]"),
        }
    }
    ensure!(rounds > 0, "--rounds must be at least 1");
    Ok(rounds)
}

fn yaml(who: &str) -> String {
    format!(
        "pipelines:\n  - name: hello\n    entrypoint: Hello\n    description: Two jobs that print, one arg\n    on:\n      pull_request:\n        branches: [main]\n    args:\n      who: {who}\n"
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds = parse_rounds()?;
    let github = LoopbackGitHub::start().await?;
    let github_url = github.url.clone();
    let bed = PushCluster::start_configured("bench-status", move |mut c| {
        c.github_api_url = github_url;
        c.dashboard_url = Some("https://sparkwing.example.com".into());
        c
    })
    .await?;
    let result = run(&bed, &github, rounds).await;
    bed.shutdown().await?;
    result
}

async fn run(bed: &PushCluster, github: &LoopbackGitHub, rounds: usize) -> Result<()> {
    let tree = &bed.tree;
    let file = tree.path().join(".sparkwing/sparkwing.yaml");
    std::fs::write(&file, yaml("main"))?;
    tree.commit_all("main")?;
    tree.push("main")?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(bed.client.clone(), bed.ns.name());
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "github-statuses"},
                "stringData": {"token": "ghp_bench"}
            }))?,
        )
        .await?;
    bed.create_pipeline(json!({
        "triggers": {"pullRequest": {"branches": ["main"], "cancelInProgress": true}},
        "github": {"secretRef": "github-statuses"}
    }))
    .await?;

    let mut delays = Vec::with_capacity(rounds);
    for round in 0..rounds {
        std::fs::write(&file, yaml(&format!("round-{round}")))?;
        let head = tree.commit_all(&format!("round {round}"))?;
        tree.push("feature")?;
        let action = if round == 0 { "opened" } else { "synchronize" };
        let body = pull_request_payload(&bed.url, action, 7, "feature", &head);
        let sent = Instant::now();
        let (status, answer) = deliver(
            bed.api(),
            "pull_request",
            &format!("bench-{round}"),
            &body,
            &sign(&body),
        )
        .await?;
        ensure!(
            status == 201,
            "round {round}: delivery answered {status}: {answer}"
        );
        let path = format!("/repos/e2e/app/statuses/{head}");
        let pending = github
            .wait_for_where("pending", WAIT, |s| s.path == path)
            .await?;
        let d = pending.at.duration_since(sent);
        println!("round {round}: delivery -> pending posted {:.1} ms", ms(d));
        delays.push(d);
    }
    delays.sort();
    let q = |p: f64| delays[((delays.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{rounds} rounds: webhook delivery -> pending commit status: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(*delays.last().expect("a round"))
    );
    Ok(())
}
