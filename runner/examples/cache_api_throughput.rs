//! bench/cache_api_throughput: a cluster cache's save and restore through the API (the runner's
//! `ApiCacheStore` against the real API served in-process on loopback, embedded stores in a temp
//! directory) vs plain `tar -cf`/`tar -xf` of the same tree in the same file system, and a second
//! save after one file of the tree changed (only its chunks are uploaded).
//!
//! Usage: cargo run --release -p sparkwing-runner --example cache_api_throughput -- [MIB] [ROUNDS]
//! (defaults 256 and 3). Prints median MiB/s; asserts nothing about timing.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use sparkwing_api::wire::{ExternalSource, Source, TriggerRequest};
use sparkwing_api::ApiClient;
use sparkwing_engine::cache_store::{CacheStore, Saved};
use sparkwing_operator::api::{spawn_serving, ApiConfig, ApiState, MemoryRuns};
use sparkwing_runner::stores::ApiCacheStore;

/// Bytes that do not compress or repeat.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Files of 4 KiB to 4 MiB in nested directories, `mib` MiB in all; the file names.
fn make_tree(root: &Path, mib: usize) -> Vec<String> {
    let sizes = [4 << 10, 64 << 10, 512 << 10, 4 << 20];
    let (mut total, mut i, mut names) = (0usize, 0u64, Vec::new());
    while total < mib << 20 {
        let size = sizes[i as usize % sizes.len()];
        let rel = format!("tree/d{}/f{i}", i % 16);
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, noise(i, size)).unwrap();
        names.push(rel);
        total += size;
        i += 1;
    }
    names
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn mibps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = rt
        .block_on(ApiState::open(
            dir.path().join("api"),
            Arc::new(MemoryRuns::new()),
            ApiConfig::default(),
        ))
        .unwrap();
    let (admin, _) = rt
        .block_on(state.store.create_token("root", vec!["admin".into()], None))
        .unwrap();
    let addr = spawn_serving(&rt, state, "127.0.0.1:0").unwrap();
    let url = format!("http://{addr}");
    let admin = ApiClient::new(&url, &admin).unwrap();
    let store = || {
        let r = admin
            .trigger(&TriggerRequest {
                namespace: Some("ci".into()),
                ..TriggerRequest::new("bench", Source::External(ExternalSource {}))
            })
            .unwrap();
        let client = ApiClient::new(&url, r.runner_token.as_deref().unwrap()).unwrap();
        ApiCacheStore::new(client, &r.namespace, &r.name, dir.path().join("tmp"))
    };
    let ws = dir.path().join("ws");
    let names = make_tree(&ws, mib);
    let bytes: u64 = names
        .iter()
        .map(|n| std::fs::metadata(ws.join(n)).unwrap().len())
        .sum();
    let paths = vec!["tree".to_string()];
    let (mut save, mut restore, mut tar_c, mut tar_x, mut incr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut incr_uploaded = (0, 0, 0);
    for round in 0..rounds {
        // Each round's first save is of a new tree (its chunks unknown to the API).
        std::fs::write(ws.join(&names[0]), noise(1_000 + round as u64, 4 << 10)).unwrap();
        let s = store();
        let t = Instant::now();
        assert!(matches!(
            s.save(&format!("tree-{round}"), &ws, &paths).unwrap(),
            Saved::Stored(_)
        ));
        save.push(mibps(bytes, t.elapsed().as_secs_f64()));
        let out = dir.path().join(format!("restore-{round}"));
        std::fs::create_dir_all(&out).unwrap();
        let t = Instant::now();
        s.restore(&format!("tree-{round}"), &out).unwrap();
        restore.push(mibps(bytes, t.elapsed().as_secs_f64()));
        std::fs::remove_dir_all(&out).unwrap();
        // One file of 4 MiB changes: the next key uploads only its chunks.
        let big = names.iter().position(|n| n.ends_with("f3")).unwrap();
        std::fs::write(ws.join(&names[big]), noise(2_000 + round as u64, 4 << 20)).unwrap();
        let t = Instant::now();
        s.save(&format!("tree-{round}-b"), &ws, &paths).unwrap();
        incr.push(mibps(bytes, t.elapsed().as_secs_f64()));
        let tr = s.last_transfer();
        incr_uploaded = (tr.uploaded, tr.chunks, tr.uploaded_bytes);
        // Plain tar of the same tree, in the same file system.
        let tarball = dir.path().join("plain.tar");
        let t = Instant::now();
        let ok = Command::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&ws)
            .arg("tree")
            .status()
            .unwrap();
        assert!(ok.success());
        tar_c.push(mibps(bytes, t.elapsed().as_secs_f64()));
        let out = dir.path().join("untar");
        std::fs::create_dir_all(&out).unwrap();
        let t = Instant::now();
        let ok = Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(ok.success());
        tar_x.push(mibps(bytes, t.elapsed().as_secs_f64()));
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_file(&tarball).unwrap();
    }
    let (save, restore, tar_c, tar_x, incr) = (
        median(save),
        median(restore),
        median(tar_c),
        median(tar_x),
        median(incr),
    );
    println!(
        "tree: {mib} MiB, {} files; {rounds} rounds; median MiB/s",
        names.len()
    );
    println!("save through the API (all chunks new):  {save:8.1}   tar -cf: {tar_c:8.1}   ({:.0}% of tar)", 100.0 * save / tar_c);
    println!("restore through the API:                {restore:8.1}   tar -xf: {tar_x:8.1}   ({:.0}% of tar)", 100.0 * restore / tar_x);
    println!(
        "save after one 4 MiB file changed:     {incr:8.1}   ({} of {} chunks uploaded, {:.1} MiB)",
        incr_uploaded.0,
        incr_uploaded.1,
        incr_uploaded.2 as f64 / (1 << 20) as f64
    );
}
