//! The records of jobs' caches and artifacts (migration 4).

use super::{Result, Store};
use rusqlite::params;
use serde::Serialize;

/// One cache of one job of a run: its key, how the restore went, and the save after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobCacheRecord {
    pub job_id: String,
    pub name: String,
    pub key: String,
    /// `hit`, `fallback` or `miss`.
    pub outcome: String,
    /// The entry restored (the key on a hit, the fallback's key, none on a miss).
    pub restored_key: Option<String>,
    /// `saved`, `already_saved` (another run saved the key first), `over_cap`, `failed`, or
    /// none (a hit, or the job did not succeed).
    pub saved: Option<String>,
    pub size_bytes: Option<u64>,
}

/// One artifact a job of a run published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactRecord {
    pub job_id: String,
    pub name: String,
    /// As published, relative to the job's working directory.
    pub path: String,
    pub size_bytes: u64,
    pub files: u64,
    pub created_at: i64,
}

/// A successful result of a memoized job, as `memo_results` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoResult {
    pub candidate: sparkwing_core::memo::MemoCandidate,
    pub outputs: std::collections::BTreeMap<String, String>,
    /// The run's directory (its artifacts are under it).
    pub log_dir: String,
}

impl Store {
    /// Record the input hash of a memoized job that runs.
    pub fn set_job_memo(&mut self, run_id: &str, job_id: &str, hash: &str) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE jobs SET memo_hash = ?3 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, job_id, hash],
            )?;
            Ok(())
        })
    }

    /// Record the run a cached job's result came from.
    pub fn set_job_cached_from(&mut self, run_id: &str, job_id: &str, from: &str) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE jobs SET cached_from = ?3 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, job_id, from],
            )?;
            Ok(())
        })
    }

    /// The successful results of job `job_id` of pipeline `pipeline` with input hash `hash`.
    pub fn memo_results(
        &self,
        pipeline: &str,
        job_id: &str,
        hash: &str,
    ) -> Result<Vec<MemoResult>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT j.run_id, j.finished_at, j.outputs_json, r.log_dir
                 FROM jobs j JOIN runs r ON r.id = j.run_id
                 WHERE j.memo_hash = ?3 AND j.job_id = ?2 AND r.pipeline = ?1
                   AND j.state = 'success' AND j.finished_at IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![pipeline, job_id, hash], |r| {
                let outputs: Option<String> = r.get(2)?;
                Ok(MemoResult {
                    candidate: sparkwing_core::memo::MemoCandidate {
                        run_id: r.get(0)?,
                        finished_at_ms: r.get(1)?,
                    },
                    outputs: outputs
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or_default(),
                    log_dir: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn record_cache_restore(&mut self, run_id: &str, c: &JobCacheRecord) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO job_caches (run_id, job_id, name, key, outcome,
                    restored_key, saved, size_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run_id,
                    c.job_id,
                    c.name,
                    c.key,
                    c.outcome,
                    c.restored_key,
                    c.saved,
                    c.size_bytes.map(|s| s as i64)
                ],
            )?;
            Ok(())
        })
    }

    pub fn record_cache_save(
        &mut self,
        run_id: &str,
        job_id: &str,
        name: &str,
        saved: &str,
        size_bytes: Option<u64>,
    ) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE job_caches SET saved = ?4, size_bytes = COALESCE(?5, size_bytes)
                 WHERE run_id = ?1 AND job_id = ?2 AND name = ?3",
                params![run_id, job_id, name, saved, size_bytes.map(|s| s as i64)],
            )?;
            Ok(())
        })
    }

    /// The caches of a run's jobs, by job then name.
    pub fn job_caches(&self, run_id: &str) -> Result<Vec<JobCacheRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.job_id, c.name, c.key, c.outcome, c.restored_key, c.saved, c.size_bytes
                 FROM job_caches c LEFT JOIN jobs j ON j.run_id = c.run_id AND j.job_id = c.job_id
                 WHERE c.run_id = ?1 ORDER BY j.position, c.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(JobCacheRecord {
                    job_id: r.get(0)?,
                    name: r.get(1)?,
                    key: r.get(2)?,
                    outcome: r.get(3)?,
                    restored_key: r.get(4)?,
                    saved: r.get(5)?,
                    size_bytes: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn record_artifact(&mut self, run_id: &str, a: &ArtifactRecord) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, job_id, name, path, size_bytes, files,
                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    run_id,
                    a.job_id,
                    a.name,
                    a.path,
                    a.size_bytes as i64,
                    a.files as i64,
                    a.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// The artifacts a run's jobs published, by job then name.
    pub fn artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.job_id, a.name, a.path, a.size_bytes, a.files, a.created_at
                 FROM artifacts a LEFT JOIN jobs j ON j.run_id = a.run_id AND j.job_id = a.job_id
                 WHERE a.run_id = ?1 ORDER BY j.position, a.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(ArtifactRecord {
                    job_id: r.get(0)?,
                    name: r.get(1)?,
                    path: r.get(2)?,
                    size_bytes: r.get::<_, i64>(3)? as u64,
                    files: r.get::<_, i64>(4)? as u64,
                    created_at: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}
