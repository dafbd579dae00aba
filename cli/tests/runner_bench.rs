//! Delivery throughput, run by hand: `cargo test -p sparkwing-cli --test runner_bench -- --ignored
//! --nocapture`. One job prints N lines (`SW_BENCH_LINES`, default 100 000): a local run, the
//! same through `sparkwing runner` (fetch, run, deliver to the in-process API, finish), and
//! `run --profile`; every line must reach the API.

mod common;
mod runner_support;
use common::Sw;
use runner_support::Api;
use std::time::Instant;

#[test]
#[ignore = "a measurement; run by hand"]
fn runner_bench_delivery_of_many_lines() {
    let n: usize = std::env::var("SW_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let api = Api::start();
    let mut sw = Sw::fixture("remote");
    // Warm the binary cache.
    sw.sw(["run", "lines", "--n", "1"]).assert_code(0);
    let t = Instant::now();
    sw.sw(["run", "lines", "--n", &n.to_string()])
        .assert_code(0);
    let local = t.elapsed();
    let upload = api.upload(sw.root());
    let (ns, name, token) = api.trigger("lines", &upload, serde_json::json!({"n": n.to_string()}));
    let mut c = sw.cmd(["runner", "--run", &format!("{ns}/{name}"), "--attempt", "1"]);
    c.env("SPARKWING_API_URL", &api.url)
        .env("SPARKWING_API_TOKEN", &token)
        .env("SPARKWING_SKIP_BOX_SLOTS", "1");
    let t = Instant::now();
    let out = sw.run_cmd(c);
    let runner = t.elapsed();
    out.assert_code(0);
    assert_eq!(api.lines(&ns, &name, "count").len(), n + 1);
    let tok = runner_support::block_on(api.state.store.create_token(
        "d",
        vec!["runs:trigger".into()],
        None,
    ))
    .unwrap()
    .0;
    let path = sw.home().join("profiles.yaml");
    std::fs::write(&path, format!("default: ci\nprofiles:\n  ci:\n    controller: {}\n    token_env: SW_TEST_TOKEN\n    namespace: ci\n", api.url)).unwrap();
    sw.env("SPARKWING_PROFILES", path.to_str().unwrap())
        .env("SW_TEST_TOKEN", &tok);
    let t = Instant::now();
    sw.sw(["run", "lines", "--n", &n.to_string(), "--profile", "ci"])
        .assert_code(0);
    let profile = t.elapsed();
    let list = api.get("/api/v1/runs?namespace=ci");
    let mirrored = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] != name.as_str())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(api.lines("ci", &mirrored, "count").len(), n + 1);
    println!("lines={n} local={local:?} runner(upload fetch+run+deliver)={runner:?} run --profile={profile:?}");
}
