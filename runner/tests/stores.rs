//! The runner's cache and artifact stores against the real API, served in-process: chunked
//! saves that upload only what changed, first-save-wins, restores in another run, artifacts
//! passed between jobs, and the refusals.

use std::path::Path;
use std::sync::Arc;

use sparkwing_api::wire::{ExternalSource, Source, TriggerRequest};
use sparkwing_api::ApiClient;
use sparkwing_engine::artifact_store::ArtifactStore;
use sparkwing_engine::cache_store::{CacheStore, Saved};
use sparkwing_operator::api::{spawn_serving, ApiConfig, ApiState, MemoryRuns};
use sparkwing_runner::stores::{ApiArtifactStore, ApiCacheStore, Chunking};

struct Served {
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    url: String,
    admin: ApiClient,
}

fn served(config: ApiConfig) -> Served {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = rt
        .block_on(ApiState::open(
            dir.path(),
            Arc::new(MemoryRuns::new()),
            config,
        ))
        .unwrap();
    let (admin, _) = rt
        .block_on(state.store.create_token("root", vec!["admin".into()], None))
        .unwrap();
    let addr = spawn_serving(&rt, state, "127.0.0.1:0").unwrap();
    let url = format!("http://{addr}");
    let admin = ApiClient::new(&url, &admin).unwrap();
    Served {
        _rt: rt,
        _dir: dir,
        url,
        admin,
    }
}

/// A new run of pipeline `p` in namespace `ci`: its runner client, namespace and name.
fn run(s: &Served) -> (ApiClient, String, String) {
    let r = s
        .admin
        .trigger(&TriggerRequest {
            namespace: Some("ci".into()),
            ..TriggerRequest::new("p", Source::External(ExternalSource {}))
        })
        .unwrap();
    let runner = ApiClient::new(&s.url, r.runner_token.as_deref().unwrap()).unwrap();
    (runner, r.namespace, r.name)
}

const SMALL: Chunking = Chunking {
    min: 4 << 10,
    avg: 16 << 10,
    max: 64 << 10,
};

/// `n` bytes that do not repeat (so chunks are not shared by chance).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn cache_store(s: &Served, chunking: Chunking) -> (ApiCacheStore, tempfile::TempDir) {
    let (client, ns, name) = run(s);
    let tmp = tempfile::tempdir().unwrap();
    let store =
        ApiCacheStore::with_chunking(client, &ns, &name, tmp.path().to_path_buf(), chunking);
    (store, tmp)
}

#[test]
fn a_second_save_uploads_only_the_changed_chunks_and_another_run_restores_it() {
    let s = served(ApiConfig::default());
    let ws = tempfile::tempdir().unwrap();
    for i in 0..8 {
        write(ws.path(), &format!("target/f{i}"), &noise(i, 96 << 10));
    }
    let paths = vec!["target".to_string()];
    let (a, _t1) = cache_store(&s, SMALL);
    assert!(matches!(
        a.save("cargo-1", ws.path(), &paths).unwrap(),
        Saved::Stored(_)
    ));
    let first = a.last_transfer();
    assert!(first.chunks > 20, "{first:?}");
    assert_eq!(
        first.uploaded, first.chunks,
        "a first save uploads every chunk"
    );
    // One file of eight changes; the next key is saved by another run of the same scope.
    write(ws.path(), "target/f3", &noise(99, 96 << 10));
    let (b, _t2) = cache_store(&s, SMALL);
    assert!(matches!(
        b.save("cargo-2", ws.path(), &paths).unwrap(),
        Saved::Stored(_)
    ));
    let second = b.last_transfer();
    // Exactly the chunks the first entry does not have were uploaded, and they are few.
    let (c, ns, name) = run(&s);
    let m1 = c
        .cache_lookup(&ns, &name, "cargo-1", None)
        .unwrap()
        .manifest
        .unwrap();
    let m2 = c
        .cache_lookup(&ns, &name, "cargo-2", None)
        .unwrap()
        .manifest
        .unwrap();
    let had: std::collections::BTreeSet<String> =
        m1.chunks.iter().map(|c| c.sha256.clone()).collect();
    let expected = m2.missing(&had).len() as u64;
    assert_eq!(second.uploaded, expected, "{second:?}");
    assert!(expected >= 1 && expected * 3 < second.chunks, "{second:?}");
    // A third run restores it (a hit) into an empty workspace.
    let (restorer, _t3) = cache_store(&s, Chunking::DEFAULT);
    let keys: Vec<String> = restorer
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["cargo-1", "cargo-2"]);
    let out = tempfile::tempdir().unwrap();
    let size = restorer.restore("cargo-2", out.path()).unwrap();
    assert_eq!(size, m2.total_size());
    for i in 0..8 {
        let rel = format!("target/f{i}");
        assert_eq!(
            std::fs::read(out.path().join(&rel)).unwrap(),
            std::fs::read(ws.path().join(&rel)).unwrap(),
            "{rel}"
        );
    }
    let e = restorer.restore("cargo-9", out.path()).unwrap_err();
    assert_eq!(e.to_string(), "cache entry cargo-9 not found");
}

#[test]
fn concurrent_saves_of_one_key_store_one_whole_entry() {
    let s = served(ApiConfig::default());
    let trees: Vec<tempfile::TempDir> = (0..2)
        .map(|t| {
            let ws = tempfile::tempdir().unwrap();
            for i in 0..4 {
                write(
                    ws.path(),
                    &format!("deps/f{i}"),
                    &noise(t * 100 + i, 64 << 10),
                );
            }
            ws
        })
        .collect();
    let stores: Vec<_> = (0..2).map(|_| cache_store(&s, SMALL)).collect();
    let saved: Vec<Saved> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .zip(&trees)
            .map(|((store, _), ws)| {
                scope.spawn(move || {
                    store
                        .save("deps-1", ws.path(), &["deps".to_string()])
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = saved
        .iter()
        .filter(|s| matches!(s, Saved::Stored(_)))
        .count();
    let already = saved.iter().filter(|s| **s == Saved::AlreadyStored).count();
    assert_eq!((stored, already), (1, 1), "{saved:?}");
    // The entry is one save's tree, whole.
    let out = tempfile::tempdir().unwrap();
    stores[0].0.restore("deps-1", out.path()).unwrap();
    let same_as = |ws: &tempfile::TempDir| {
        (0..4).all(|i| {
            let rel = format!("deps/f{i}");
            std::fs::read(out.path().join(&rel)).unwrap()
                == std::fs::read(ws.path().join(&rel)).unwrap()
        })
    };
    assert!(same_as(&trees[0]) != same_as(&trees[1]), "one tree, whole");
}

#[test]
fn a_cache_over_the_cap_is_not_saved() {
    let s = served(ApiConfig {
        cache_max_bytes: 50_000,
        ..ApiConfig::default()
    });
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "big/f", &noise(1, 100_000));
    let (store, _t) = cache_store(&s, SMALL);
    assert!(matches!(
        store.save("big-1", ws.path(), &["big".to_string()]).unwrap(),
        Saved::OverCap(size) if size > 100_000
    ));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn artifacts_pass_from_a_producer_to_a_consumer() {
    let s = served(ApiConfig::default());
    let (client, ns, name) = run(&s);
    let tmp = tempfile::tempdir().unwrap();
    let store = ApiArtifactStore::new(client, &ns, &name, tmp.path().to_path_buf()).unwrap();
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "dist/app", &noise(5, 3 << 20));
    write(ws.path(), "dist/sub/readme", b"hello");
    let p = store
        .publish("build", "dist", &ws.path().join("dist"))
        .unwrap();
    assert_eq!((p.size_bytes, p.files), ((3 << 20) + 5, 2));
    store
        .publish("build", "readme", &ws.path().join("dist/sub/readme"))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    store.fetch("build", "dist", &out.path().join("d")).unwrap();
    store
        .fetch("build", "readme", &out.path().join("r.txt"))
        .unwrap();
    assert_eq!(
        std::fs::read(out.path().join("d/app")).unwrap(),
        noise(5, 3 << 20)
    );
    assert_eq!(
        std::fs::read(out.path().join("d/sub/readme")).unwrap(),
        b"hello"
    );
    assert_eq!(std::fs::read(out.path().join("r.txt")).unwrap(), b"hello");
    let listed = s.admin.list_artifacts(&ns, &name).unwrap();
    let names: Vec<String> = listed
        .artifacts
        .iter()
        .map(|a| format!("{}/{} {} {}", a.job, a.name, a.kind.as_str(), a.size_bytes))
        .collect();
    assert_eq!(
        names,
        [
            format!("build/dist tar {}", (3 << 20) + 5),
            "build/readme file 5".to_string()
        ]
    );
    let e = store.fetch("build", "nope", out.path()).unwrap_err();
    assert_eq!(e.to_string(), "artifact nope of job build not found");
    let e = store
        .publish("build", "gone", &ws.path().join("absent"))
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}
