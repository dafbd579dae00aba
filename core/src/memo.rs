//! Memoized jobs (`docs/authoring.md#memoized-jobs`): a job declared with its inputs is not run
//! when a successful result for the same inputs is recent enough; this module hashes the inputs
//! and picks the result to take.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a memoized job's result depends on, and how long a result stays good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoSpec {
    pub ttl_ms: u64,
    /// Files or directories (relative to the job's working directory) whose content counts.
    #[serde(default)]
    pub files: Vec<String>,
    /// Names of the run's args whose values count.
    #[serde(default)]
    pub args: Vec<String>,
    /// Outputs of the job's needs that count.
    #[serde(default)]
    pub outputs: Vec<MemoOutput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoOutput {
    pub job: String,
    pub output: String,
}

/// A memoized job's inputs as the engine read them. `files`: each file under the declared paths
/// (a directory contributes every file in it) with its path relative to the workspace and its
/// content, `None` for a declared path that does not exist; `args` and `outputs` by name, `None`
/// when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoInputs {
    pub pipeline: String,
    pub job: String,
    pub files: Vec<(String, Option<Vec<u8>>)>,
    pub args: Vec<(String, Option<String>)>,
    pub outputs: Vec<(String, String, Option<String>)>,
    /// A job expanded from a fan-out or matrix: its item (`fanout::Expanded`), so two items never
    /// share a result. `None` for other jobs (their hash is as before).
    pub item: Option<String>,
}

fn put(h: &mut Sha256, tag: u8, bytes: &[u8]) {
    h.update([tag]);
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn put_opt(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        Some(b) => put(h, 1, b),
        None => h.update([0]),
    }
}

/// The hash of a memoized job's inputs (64 hex digits). Files count in path order, so the order
/// a directory is read in does not matter.
pub fn memo_hash(inputs: &MemoInputs) -> String {
    let mut h = Sha256::new();
    put(&mut h, b'p', inputs.pipeline.as_bytes());
    put(&mut h, b'j', inputs.job.as_bytes());
    let mut files: Vec<&(String, Option<Vec<u8>>)> = inputs.files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, content) in files {
        put(&mut h, b'f', path.as_bytes());
        put_opt(&mut h, content.as_deref());
    }
    for (name, value) in &inputs.args {
        put(&mut h, b'a', name.as_bytes());
        put_opt(&mut h, value.as_deref().map(str::as_bytes));
    }
    for (job, output, value) in &inputs.outputs {
        put(&mut h, b'o', job.as_bytes());
        put(&mut h, b'k', output.as_bytes());
        put_opt(&mut h, value.as_deref().map(str::as_bytes));
    }
    if let Some(item) = &inputs.item {
        put(&mut h, b'i', item.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An earlier successful result of the same job with the same input hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoCandidate {
    pub run_id: String,
    pub finished_at_ms: i64,
}

/// The result to take: the newest candidate that finished within `ttl_ms` of `now_ms`.
pub fn choose(candidates: &[MemoCandidate], now_ms: i64, ttl_ms: u64) -> Option<&MemoCandidate> {
    let oldest = now_ms.saturating_sub(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    candidates
        .iter()
        .filter(|c| c.finished_at_ms >= oldest && c.finished_at_ms <= now_ms)
        .max_by(|a, b| (a.finished_at_ms, &a.run_id).cmp(&(b.finished_at_ms, &b.run_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> MemoInputs {
        MemoInputs {
            pipeline: "p".into(),
            job: "build".into(),
            files: vec![
                ("src/a".into(), Some(b"A".to_vec())),
                ("src/b".into(), Some(b"B".to_vec())),
            ],
            args: vec![("target".into(), Some("\"x86\"".into()))],
            outputs: vec![("detect".into(), "version".into(), Some("7".into()))],
            item: None,
        }
    }

    #[test]
    fn an_expanded_jobs_item_keys_its_result() {
        let plain = memo_hash(&inputs());
        let a = memo_hash(&MemoInputs {
            item: Some("a".into()),
            ..inputs()
        });
        let b = memo_hash(&MemoInputs {
            item: Some("b".into()),
            ..inputs()
        });
        assert_ne!(a, b);
        assert_ne!(a, plain);
    }

    #[test]
    fn the_hash_changes_with_every_input_and_not_with_file_order() {
        let base = memo_hash(&inputs());
        assert_eq!(base.len(), 64);
        let mut swapped = inputs();
        swapped.files.reverse();
        assert_eq!(memo_hash(&swapped), base);
        let changes: [fn(&mut MemoInputs); 8] = [
            |i| i.files[0].1 = Some(b"A2".to_vec()),
            |i| i.files[0].1 = None,
            |i| i.files.push(("src/c".into(), Some(Vec::new()))),
            |i| i.args[0].1 = Some("\"arm\"".into()),
            |i| i.args[0].1 = None,
            |i| i.outputs[0].2 = Some("8".into()),
            |i| i.job = "test".into(),
            |i| i.pipeline = "q".into(),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut i = inputs();
            change(&mut i);
            assert_ne!(memo_hash(&i), base, "change {n}");
        }
    }

    #[test]
    fn the_newest_result_within_the_ttl_is_taken() {
        let c = |run: &str, at: i64| MemoCandidate {
            run_id: run.into(),
            finished_at_ms: at,
        };
        let cands = vec![c("old", 100), c("new", 900), c("mid", 500)];
        assert_eq!(
            choose(&cands, 1000, 600).map(|c| c.run_id.as_str()),
            Some("new")
        );
        assert_eq!(choose(&cands[..1], 1000, 600), None);
        assert_eq!(
            choose(&cands[..1], 1000, 900).map(|c| c.run_id.as_str()),
            Some("old")
        );
        assert_eq!(choose(&[], 1000, 600), None);
    }
}
