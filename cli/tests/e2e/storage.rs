//! Dependency caches and artifacts on `sparkwing run`: restore and save across runs (hit, miss,
//! fallback), two runs saving one key at once, artifacts handed from a producer to a consumer and
//! downloaded afterwards, and the errors of bad declarations. The `storage` fixture's jobs log
//! what they found, which tells what the engine restored or handed over.

use crate::common::*;
use serde_json::Value;

fn caches_of(sw: &Sw, id: &str) -> Vec<Value> {
    sw.status(id).1["caches"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn restored_line(sw: &Sw, id: &str) -> String {
    sw.log_lines(id, "build")
        .into_iter()
        .find(|l| l.starts_with("restored: "))
        .unwrap_or_default()
}

#[test]
fn a_cache_misses_then_hits_then_falls_back_when_its_key_file_changes() {
    let sw = Sw::fixture("storage");
    let first = sw.sw(["run", "deps"]);
    first.assert_code(0);
    let id1 = first.run_id();
    assert_eq!(restored_line(&sw, &id1), "restored: none");
    let c = &caches_of(&sw, &id1)[0];
    assert_eq!(c["outcome"], "miss");
    assert_eq!(c["saved"], "saved");
    let key1 = c["key"].as_str().unwrap().to_string();
    assert!(key1.starts_with("deps-v1-"), "{key1}");
    assert!(
        sw.log_lines(&id1, "build")
            .iter()
            .any(|l| l.starts_with(&format!("cache deps: saved {key1} ("))),
        "{:?}",
        sw.log_lines(&id1, "build")
    );

    // The workspace loses what the job made; the next run gets it back from the cache.
    std::fs::remove_dir_all(sw.root().join("deps")).unwrap();
    let second = sw.sw(["run", "deps"]);
    second.assert_code(0);
    let id2 = second.run_id();
    assert_eq!(restored_line(&sw, &id2), "restored: v1");
    let c = &caches_of(&sw, &id2)[0];
    assert_eq!(
        (c["outcome"].as_str(), c["saved"].as_str()),
        (Some("hit"), None)
    );
    assert_eq!(c["key"], key1.as_str());
    let pretty = sw.sw(["runs", "status", &id2]);
    assert!(
        pretty
            .stdout
            .contains(&format!("cache:    build deps: hit (key {key1})")),
        "{pretty}"
    );

    // Another lock file: a new key, restored from the newest entry of the prefix, then saved.
    std::fs::remove_dir_all(sw.root().join("deps")).unwrap();
    std::fs::write(sw.root().join("lock.txt"), "v2\n").unwrap();
    let third = sw.sw(["run", "deps"]);
    third.assert_code(0);
    let id3 = third.run_id();
    assert_eq!(restored_line(&sw, &id3), "restored: v1");
    let c = &caches_of(&sw, &id3)[0];
    assert_eq!(c["outcome"], "fallback");
    assert_eq!(c["restored_key"], key1.as_str());
    assert_eq!(c["saved"], "saved");
    assert_ne!(c["key"], key1.as_str());

    let list = sw.sw(["cache", "list", "-o", "json"]);
    list.assert_code(0);
    let keys: Vec<String> = list
        .json_lines()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 2, "{list}");
    assert!(keys.contains(&key1));

    let pruned = sw.sw(["cache", "prune", "--all", "-o", "json"]);
    pruned.assert_code(0);
    assert_eq!(pruned.stdout_json()["removed"].as_array().unwrap().len(), 2);
    assert!(sw
        .sw(["cache", "list", "-o", "json"])
        .json_lines()
        .is_empty());
    // Pruning by age keeps what was used recently.
    sw.sw(["run", "deps"]).assert_code(0);
    let kept = sw.sw(["cache", "prune", "--older-than", "1h", "-o", "json"]);
    kept.assert_code(0);
    assert_eq!(kept.stdout_json()["removed"], serde_json::json!([]));
    assert_eq!(sw.sw(["cache", "list", "-o", "json"]).json_lines().len(), 1);
    // By key: an unknown one is not found; a known one goes.
    let unknown = sw.sw(["cache", "prune", "--key", "nope-1"]);
    unknown.assert_code(5);
    assert!(
        unknown.stderr.contains("cache entry nope-1 not found"),
        "{unknown}"
    );
    let left = sw.sw(["cache", "list", "-o", "json"]).json_lines()[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let by_key = sw.sw(["cache", "prune", "--key", &left, "-o", "json"]);
    by_key.assert_code(0);
    assert_eq!(by_key.stdout_json()["removed"], serde_json::json!([left]));
    assert!(sw
        .sw(["cache", "list", "-o", "json"])
        .json_lines()
        .is_empty());
}

#[test]
fn two_runs_saving_one_key_at_once_keep_one_whole_entry() {
    let sw = Sw::fixture("storage");
    std::fs::write(sw.root().join("pair"), "").unwrap();
    let a = sw.spawn(["run", "deps"]);
    let b = sw.spawn(["run", "deps"]);
    let (a, b) = (a.finish(), b.finish());
    a.assert_code(0);
    b.assert_code(0);
    let mut saved: Vec<String> = [a.run_id(), b.run_id()]
        .iter()
        .map(|id| {
            let c = &caches_of(&sw, id)[0];
            assert_eq!(c["outcome"], "miss", "{c}");
            c["saved"].as_str().unwrap().to_string()
        })
        .collect();
    saved.sort();
    assert_eq!(saved, ["already_saved", "saved"]);
    let list = sw.sw(["cache", "list", "-o", "json"]).json_lines();
    assert_eq!(list.len(), 1, "{list:?}");
    // The one entry is whole: a later run restores it.
    std::fs::remove_file(sw.root().join("pair")).unwrap();
    std::fs::remove_dir_all(sw.root().join("deps")).unwrap();
    let again = sw.sw(["run", "deps"]);
    again.assert_code(0);
    assert_eq!(restored_line(&sw, &again.run_id()), "restored: v1");
    assert_eq!(
        std::fs::read_to_string(sw.root().join("deps/sub/file")).unwrap(),
        "big\n"
    );
    // Nothing half-written is left in the store.
    let tmp = sw.home().join("caches/tmp");
    assert_eq!(std::fs::read_dir(tmp).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn an_artifact_goes_from_producer_to_consumer_and_downloads_whole() {
    let sw = Sw::fixture("storage");
    let out = sw.sw(["run", "artifacts"]);
    out.assert_code(0);
    let id = out.run_id();
    assert_eq!(
        sw.log_lines(&id, "check")
            .into_iter()
            .filter(|l| l.starts_with("got: "))
            .collect::<Vec<_>>(),
        ["got: app v1 guide"]
    );
    assert!(sw.root().join("consumer/dist/app.txt").is_file());
    let (_, status) = sw.status(&id);
    assert_eq!(status["artifacts"][0]["name"], "dist");
    assert_eq!(status["artifacts"][0]["files"], 2);

    let list = sw.sw(["runs", "artifacts", "--run", &id, "-o", "json"]);
    list.assert_code(0);
    let listed = list.json_lines();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["job_id"], "build");
    assert_eq!(listed[0]["size_bytes"], 13);

    let to = tempfile::tempdir().unwrap();
    let dl = sw.sw([
        "runs",
        "artifacts",
        "--run",
        &id,
        "--download",
        "dist",
        "--to",
        to.path().to_str().unwrap(),
    ]);
    dl.assert_code(0);
    for f in ["app.txt", "docs/guide.md"] {
        assert_eq!(
            std::fs::read(to.path().join("dist").join(f)).unwrap(),
            std::fs::read(sw.root().join("dist").join(f)).unwrap(),
            "{f}"
        );
    }
    let missing = sw.sw(["runs", "artifacts", "--run", &id, "--download", "nope"]);
    missing.assert_code(5);
    assert!(
        missing.stderr.contains(&format!(
            "artifact nope not found in run {id} (it has: build/dist)"
        )),
        "{missing}"
    );
}

#[test]
fn bad_caches_and_artifacts_fail_clearly() {
    let sw = Sw::fixture("storage");
    let out = sw.sw(["run", "bad-artifact"]);
    out.assert_code(1);
    let (_, st) = sw.status(&out.run_id());
    let err = st["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("invalid plan: artifact \"nope\" of job \"build\" not found"),
        "{err}"
    );

    let out = sw.sw(["run", "bad-cache"]);
    out.assert_code(1);
    let (_, st) = sw.status(&out.run_id());
    assert_eq!(
        st["error"],
        "invalid plan: job \"build\" cache \"home\": path \"../outside\" is outside the workspace (paths are relative to the job's working directory and must stay inside the repository)"
    );
    // A plan check: `pipeline plan` says the same, and nothing ran.
    let plan = sw.sw(["pipeline", "plan", "bad-cache"]);
    plan.assert_code(1);
    assert!(plan.stderr.contains("is outside the workspace"), "{plan}");

    let out = sw.sw(["run", "missing-publish"]);
    out.assert_code(1);
    let job = sw.job(&out.run_id(), "build");
    assert_eq!(job["state"], "failed");
    assert_eq!(
        job["reason"],
        "artifact report of job build: out/report.xml does not exist (publish a path the job creates)"
    );

    // With --profile the caches are the cluster's: a profile that does not exist says so.
    let profile = sw.sw(["cache", "list", "--profile", "prod"]);
    assert_ne!(profile.code, 0, "{profile}");
    assert!(profile.stderr.contains("prod"), "{profile}");
}

/// The jobs that ran since the last call, sorted; empties `ran.txt`.
fn ran(sw: &Sw) -> Vec<String> {
    let path = sw.root().join("ran.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    let mut jobs: Vec<String> = text.lines().map(str::to_string).collect();
    jobs.sort();
    jobs
}

fn used(sw: &Sw, id: &str) -> Vec<String> {
    sw.log_lines(id, "use")
        .into_iter()
        .filter(|l| l.starts_with("used: "))
        .collect()
}

#[test]
fn a_memoized_job_is_skipped_with_its_outputs_and_artifacts_until_an_input_changes() {
    let sw = Sw::fixture("storage");
    let first = sw.sw(["run", "memo"]);
    first.assert_code(0);
    let id1 = first.run_id();
    assert_eq!(ran(&sw), ["build", "detect", "use"]);
    assert_eq!(sw.job(&id1, "build")["state"], "success");

    // Same inputs: build is cached; its output and artifact come from the first run.
    std::fs::remove_dir_all(sw.root().join("out")).unwrap();
    let second = sw.sw(["run", "memo"]);
    second.assert_code(0);
    let id2 = second.run_id();
    assert_eq!(ran(&sw), ["detect", "use"]);
    let build = sw.job(&id2, "build");
    assert_eq!(build["state"], "cached");
    assert_eq!(build["reason"], format!("cached from run {id1}"));
    assert_eq!(build["outputs"]["built"], "yes");
    assert_eq!(used(&sw, &id2), ["used: bin plain one built=yes"]);
    assert_eq!(sw.status(&id2).1["artifacts"][0]["name"], "bin");
    assert_eq!(second.events("job_cached").len(), 1, "{second}");

    // --sw-no-cache runs it.
    let forced = sw.sw(["run", "memo", "--sw-no-cache"]);
    forced.assert_code(0);
    assert_eq!(ran(&sw), ["build", "detect", "use"]);
    assert_eq!(sw.job(&forced.run_id(), "build")["state"], "success");

    // A changed file, then a changed arg: each runs it again, once.
    std::fs::write(sw.root().join("memo-src/a.txt"), "two\n").unwrap();
    let changed = sw.sw(["run", "memo"]);
    changed.assert_code(0);
    assert_eq!(ran(&sw), ["build", "detect", "use"]);
    assert_eq!(
        used(&sw, &changed.run_id()),
        ["used: bin plain two built=yes"]
    );
    sw.sw(["run", "memo"]).assert_code(0);
    assert_eq!(ran(&sw), ["detect", "use"]);
    let other_arg = sw.sw(["run", "memo", "--flavor", "fancy"]);
    other_arg.assert_code(0);
    assert_eq!(ran(&sw), ["build", "detect", "use"]);
    assert_eq!(
        used(&sw, &other_arg.run_id()),
        ["used: bin fancy two built=yes"]
    );
}
