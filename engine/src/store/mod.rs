//! The run store: one SQLite database, `$SPARKWING_HOME/state.db`.
//!
//! Every `sparkwing run` is its own process writing its own run, so the database is opened in WAL
//! mode with a long busy timeout and every write is one short `BEGIN IMMEDIATE` transaction.

pub mod dashboard_queries;
mod gates;
mod migrations;
mod records;
mod storage;

pub use gates::{GateRecord, RunConcurrency};
pub use records::{EventRecord, JobRecord, NewJob, NewRun, RunFilter, RunRecord};
pub use storage::{ArtifactRecord, JobCacheRecord, MemoResult};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use sparkwing_core::{JobState, RunPhase};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = migrations::MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state database {path} has schema version {found}, newer than this sparkwing supports ({supported}); upgrade sparkwing, or point SPARKWING_HOME at another directory")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("the state database {path} is not a readable SQLite database ({detail}); nothing was changed: move it aside (mv {path} {path}.corrupt) to start a fresh one")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("run {0} not found")]
    RunNotFound(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

impl Store {
    /// Open (creating if needed) the store in `home`, migrating it to this binary's schema.
    pub fn open(home: &Path) -> Result<Store> {
        std::fs::create_dir_all(home).map_err(|source| StoreError::CreateDir {
            path: home.to_path_buf(),
            source,
        })?;
        Self::open_path(&home.join("state.db"))
    }

    pub fn open_path(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path, e)
    }

    fn configure(&mut self) -> Result<()> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err(e))?;
        // journal_mode returns a row; it is also the first statement that reads the file header,
        // so a corrupt file is detected here. Switching a new database to WAL needs an exclusive
        // lock, and SQLite answers BUSY at once there, without the busy handler, when another
        // process holds a lock (two runs opening a fresh home together): retried until the busy
        // timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            {
                Ok(()) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        // Short-lived processes open and close the store all the time: checkpointing (two
        // fsyncs) and deleting the WAL on every close cost more than a whole warm run. SQLite still
        // checkpoints automatically when the WAL grows past 1000 pages.
        self.conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<()> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(|e| classify(&path, e))?;
        // Re-read inside the lock: another process may have migrated meanwhile.
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| classify(&path, e))?;
        for (i, sql) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(current.max(0) as usize)
        {
            tx.execute_batch(sql).map_err(|e| classify(&path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| classify(&path, e))?;
        }
        tx.commit().map_err(|e| classify(&path, e))
    }

    fn immediate<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e))?;
        let out = f(&tx).map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        Ok(out)
    }

    pub fn create_run(&mut self, run: &NewRun) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "INSERT INTO runs (id, pipeline, entrypoint, status, args_json, repo_root, git_branch,
                    git_commit, host, user, pid, runner, created_at, started_at, finished_at,
                    exit_code, error, log_dir, retry_of)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                params![
                    run.id,
                    run.pipeline,
                    run.entrypoint,
                    run.status.local_str(),
                    run.args_json,
                    run.repo_root,
                    run.git_branch,
                    run.git_commit,
                    run.host,
                    run.user,
                    run.pid,
                    run.runner,
                    run.created_at,
                    run.started_at,
                    run.finished_at,
                    run.exit_code,
                    run.error,
                    run.log_dir,
                    run.retry_of,
                ],
            )?;
            Ok(())
        })
    }

    /// Move a run to `status`. Terminal statuses also set `finished_at`, exit code and error.
    pub fn set_run_status(
        &mut self,
        id: &str,
        status: RunPhase,
        now: i64,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        self.immediate(|tx| {
            if status == RunPhase::Running {
                tx.execute(
                    "UPDATE runs SET status = ?2, started_at = COALESCE(started_at, ?3) WHERE id = ?1",
                    params![id, status.local_str(), now],
                )?;
            } else if status.is_terminal() {
                tx.execute(
                    "UPDATE runs SET status = ?2, finished_at = ?3, exit_code = ?4, error = ?5 WHERE id = ?1",
                    params![id, status.local_str(), now, exit_code, error],
                )?;
            } else {
                tx.execute(
                    "UPDATE runs SET status = ?2 WHERE id = ?1",
                    params![id, status.local_str()],
                )?;
            }
            Ok(())
        })
    }

    /// Adds jobs to a run, after those it has (a fan-out's jobs join a running run).
    pub fn insert_jobs(&mut self, run_id: &str, jobs: &[NewJob]) -> Result<()> {
        self.immediate(|tx| {
            let first: i64 = tx.query_row(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM jobs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )?;
            let mut stmt = tx.prepare(
                "INSERT INTO jobs (run_id, job_id, position, needs_json, optional, is_finally, state,
                    reason, attempt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', NULL, 0)",
            )?;
            for (i, job) in jobs.iter().enumerate() {
                stmt.execute(params![
                    run_id,
                    job.id,
                    first + i as i64,
                    serde_json::to_string(&job.needs).unwrap_or_else(|_| "[]".into()),
                    job.optional,
                    job.finally,
                ])?;
            }
            Ok(())
        })
    }

    pub fn job_started(
        &mut self,
        run_id: &str,
        job_id: &str,
        attempt: u32,
        now: i64,
    ) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE jobs SET state = 'running', attempt = ?3, started_at = COALESCE(started_at, ?4),
                    reason = NULL
                 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, job_id, attempt, now],
            )?;
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn job_finished(
        &mut self,
        run_id: &str,
        job_id: &str,
        state: JobState,
        reason: Option<&str>,
        exit_code: Option<i32>,
        outputs_json: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE jobs SET state = ?3, reason = ?4, exit_code = ?5,
                    outputs_json = COALESCE(?6, outputs_json), finished_at = ?7
                 WHERE run_id = ?1 AND job_id = ?2",
                params![
                    run_id,
                    job_id,
                    state.as_str(),
                    reason,
                    exit_code,
                    outputs_json,
                    now
                ],
            )?;
            Ok(())
        })
    }

    /// Record that run `id` was started by job `parent_job` of run `parent_run_id`.
    pub fn set_run_parent(
        &mut self,
        id: &str,
        parent_run_id: &str,
        parent_job: &str,
    ) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE runs SET parent_run_id = ?2, parent_job = ?3 WHERE id = ?1",
                params![id, parent_run_id, parent_job],
            )?;
            Ok(())
        })
    }

    /// Record the sub-pipeline run an await job started.
    pub fn set_job_child(&mut self, run_id: &str, job_id: &str, child_run: &str) -> Result<()> {
        self.immediate(|tx| {
            tx.execute(
                "UPDATE jobs SET child_run = ?3 WHERE run_id = ?1 AND job_id = ?2",
                params![run_id, job_id, child_run],
            )?;
            Ok(())
        })
    }

    /// Append an event; returns its sequence number within the run (1, 2, ...).
    pub fn append_event(
        &mut self,
        run_id: &str,
        job_id: Option<&str>,
        kind: &str,
        payload: &serde_json::Value,
        now: i64,
    ) -> Result<i64> {
        self.immediate(|tx| {
            let seq: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO events (run_id, seq, ts, job_id, kind, payload_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run_id, seq, now, job_id, kind, payload.to_string()],
            )?;
            Ok(seq)
        })
    }

    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM runs WHERE id = ?1", records::RUN_COLUMNS),
                params![id],
                records::run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Find a run by its full id, or by the id without its `run-` prefix.
    pub fn find_run(&self, id: &str) -> Result<RunRecord> {
        if let Some(r) = self.get_run(id)? {
            return Ok(r);
        }
        if !id.starts_with("run-") {
            if let Some(r) = self.get_run(&format!("run-{id}"))? {
                return Ok(r);
            }
        }
        Err(StoreError::RunNotFound(id.to_string()))
    }

    pub fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut sql = format!("SELECT {} FROM runs WHERE 1 = 1", records::RUN_COLUMNS);
        let mut values: Vec<String> = Vec::new();
        if !filter.pipelines.is_empty() {
            sql.push_str(&format!(
                " AND pipeline IN ({})",
                vec!["?"; filter.pipelines.len()].join(", ")
            ));
            values.extend(filter.pipelines.iter().cloned());
        }
        if !filter.statuses.is_empty() {
            sql.push_str(&format!(
                " AND status IN ({})",
                vec!["?"; filter.statuses.len()].join(", ")
            ));
            values.extend(filter.statuses.iter().map(|s| s.local_str().to_string()));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                rusqlite::params_from_iter(values.iter()),
                records::run_from_row,
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Runs not yet terminal (candidates for dead-process reconciliation).
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM runs WHERE status IN ('queued', 'running')",
                records::RUN_COLUMNS
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], records::run_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    pub fn jobs(&self, run_id: &str) -> Result<Vec<JobRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM jobs WHERE run_id = ?1 ORDER BY position",
                records::JOB_COLUMNS
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id], records::job_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    pub fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, seq, ts, job_id, kind, payload_json FROM events
                 WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run_id, after_seq], records::event_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Delete a run with its jobs and events (the run's directory is the caller's). Used when a
    /// run lives elsewhere (`mirror_local: false` after the API took all of it).
    pub fn delete_run(&mut self, id: &str) -> Result<bool> {
        self.immediate(|tx| {
            tx.execute("DELETE FROM events WHERE run_id = ?1", params![id])?;
            tx.execute("DELETE FROM jobs WHERE run_id = ?1", params![id])?;
            Ok(tx.execute("DELETE FROM runs WHERE id = ?1", params![id])? > 0)
        })
    }

    /// Mark a run whose process is gone as failed, and its unfinished jobs as cancelled.
    /// Only touches the run if it is still unfinished (another reader may have got there first).
    pub fn fail_abandoned_run(&mut self, id: &str, reason: &str, now: i64) -> Result<bool> {
        self.immediate(|tx| {
            let changed = tx.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?2, exit_code = 1, error = ?3
                 WHERE id = ?1 AND status IN ('queued', 'running')",
                params![id, now, reason],
            )?;
            if changed > 0 {
                tx.execute(
                    "UPDATE jobs SET state = 'cancelled', reason = 'run-abandoned',
                        finished_at = COALESCE(finished_at, ?2)
                     WHERE run_id = ?1 AND state IN ('pending', 'running')",
                    params![id, now],
                )?;
                let seq: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
                    params![id],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT INTO events (run_id, seq, ts, job_id, kind, payload_json)
                     VALUES (?1, ?2, ?3, NULL, 'run_abandoned', ?4)",
                    params![
                        id,
                        seq,
                        now,
                        serde_json::json!({ "reason": reason }).to_string()
                    ],
                )?;
            }
            Ok(changed > 0)
        })
    }
}

/// How long a statement waits for another process's lock on the store.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    if is_corruption(&e) {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    } else {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests;
