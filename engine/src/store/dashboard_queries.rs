//! Read-only queries for the dashboard (`sparkwing dashboard`): a read-only open, paged and
//! filtered run lists, and per-pipeline summaries. Nothing here writes.

use super::{classify, records, Result, RunRecord, Store, StoreError, SCHEMA_VERSION};
use rusqlite::{params_from_iter, Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Which runs a dashboard list shows.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub pipelines: Vec<String>,
    pub statuses: Vec<String>,
    /// Only runs of this repository (its `repo_root`).
    pub repo: Option<String>,
    /// Only runs older than this run (a cursor for "older runs").
    pub before: Option<String>,
    pub limit: u32,
}

/// A pipeline of one repository, with how often it ran and its latest runs.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct PipelineSummary {
    pub repo_root: String,
    pub pipeline: String,
    pub runs: i64,
    /// The latest runs, newest first (at most 10).
    pub recent: Vec<RunRecord>,
}

impl RunQuery {
    fn where_clause(&self, values: &mut Vec<String>) -> String {
        let mut sql = String::from(" WHERE 1 = 1");
        if !self.pipelines.is_empty() {
            sql.push_str(&format!(
                " AND pipeline IN ({})",
                vec!["?"; self.pipelines.len()].join(", ")
            ));
            values.extend(self.pipelines.iter().cloned());
        }
        if !self.statuses.is_empty() {
            sql.push_str(&format!(
                " AND status IN ({})",
                vec!["?"; self.statuses.len()].join(", ")
            ));
            values.extend(self.statuses.iter().cloned());
        }
        if let Some(repo) = &self.repo {
            sql.push_str(" AND repo_root = ?");
            values.push(repo.clone());
        }
        sql
    }
}

impl Store {
    /// Open an existing store read-only: no migration, no journal-mode change, never a write.
    /// A database that does not exist yet is an error (the dashboard creates it once at start).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(path, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| classify(path, e))?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// SQLite's `data_version`: changes whenever another connection (any process) commits.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Runs matching `q`, newest first.
    pub fn query_runs(&self, q: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut values = Vec::new();
        let mut sql = format!(
            "SELECT {} FROM runs{}",
            records::RUN_COLUMNS,
            q.where_clause(&mut values)
        );
        if let Some(before) = &q.before {
            sql.push_str(" AND (created_at, id) < (SELECT created_at, id FROM runs WHERE id = ?)");
            values.push(before.clone());
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            q.limit
        ));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter()), records::run_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// How many runs match `q` (ignoring its cursor and limit).
    pub fn count_runs(&self, q: &RunQuery) -> Result<i64> {
        let mut values = Vec::new();
        let sql = format!("SELECT COUNT(*) FROM runs{}", q.where_clause(&mut values));
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row(params_from_iter(values.iter()), |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// The pipeline names that have runs, sorted.
    pub fn pipeline_names(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err(e))
    }

    /// Every (repository, pipeline) that has run, most recently run first, with its latest runs.
    pub fn pipeline_summaries(&self, recent: u32) -> Result<Vec<PipelineSummary>> {
        let groups: Vec<(String, String, i64)> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT repo_root, pipeline, COUNT(*), MAX(created_at) AS last FROM runs
                     GROUP BY repo_root, pipeline ORDER BY last DESC",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?
        };
        groups
            .into_iter()
            .map(|(repo_root, pipeline, runs)| {
                let recent = self.query_runs(&RunQuery {
                    pipelines: vec![pipeline.clone()],
                    repo: Some(repo_root.clone()),
                    limit: recent,
                    ..RunQuery::default()
                })?;
                Ok(PipelineSummary {
                    repo_root,
                    pipeline,
                    runs,
                    recent,
                })
            })
            .collect()
    }
}
