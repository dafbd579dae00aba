//! The schema, as append-only migrations. Migration N brings `user_version` from N-1 to N.
//! Never edit a migration that has shipped; add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: runs, jobs, events.
    r#"
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        pipeline    TEXT NOT NULL,
        entrypoint  TEXT NOT NULL,
        status      TEXT NOT NULL,
        args_json   TEXT NOT NULL,
        repo_root   TEXT NOT NULL,
        git_branch  TEXT,
        git_commit  TEXT,
        host        TEXT NOT NULL,
        user        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        runner      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        started_at  INTEGER,
        finished_at INTEGER,
        exit_code   INTEGER,
        error       TEXT,
        log_dir     TEXT NOT NULL
    );
    CREATE INDEX runs_by_created ON runs (created_at DESC);
    CREATE INDEX runs_by_pipeline ON runs (pipeline, created_at DESC);
    CREATE INDEX runs_by_status ON runs (status);

    CREATE TABLE jobs (
        run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        job_id       TEXT NOT NULL,
        position     INTEGER NOT NULL,
        needs_json   TEXT NOT NULL,
        optional     INTEGER NOT NULL,
        is_finally   INTEGER NOT NULL,
        state        TEXT NOT NULL,
        reason       TEXT,
        attempt      INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        exit_code    INTEGER,
        outputs_json TEXT,
        PRIMARY KEY (run_id, job_id)
    );

    CREATE TABLE events (
        run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        seq          INTEGER NOT NULL,
        ts           INTEGER NOT NULL,
        job_id       TEXT,
        kind         TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    "#,
    // 2: sub-pipelines: a run started by another run's job records that parent; the awaiting
    // job records the child run it started (a local run id, or `namespace/name` on a cluster).
    r#"
    ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
    ALTER TABLE runs ADD COLUMN parent_job TEXT;
    ALTER TABLE jobs ADD COLUMN child_run TEXT;
    "#,
    // 3: re-runs: a run started by `sparkwing runs retry` records the run it retries.
    r#"
    ALTER TABLE runs ADD COLUMN retry_of TEXT;
    "#,
    // 4: approval gates and concurrency groups: each gate of a run with its settings and, once
    // decided, who decided, when and why; a run's concurrency group and whether it waits for it.
    r#"
    CREATE TABLE gates (
        run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        job_id        TEXT NOT NULL,
        message       TEXT,
        timeout_ms    INTEGER,
        on_timeout    TEXT NOT NULL,
        waiting_since INTEGER,
        decision      TEXT,
        decided_by    TEXT,
        decided_at    INTEGER,
        comment       TEXT,
        timed_out     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, job_id)
    );
    CREATE TABLE run_concurrency (
        run_id             TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
        group_key          TEXT NOT NULL,
        group_limit        INTEGER NOT NULL,
        cancel_in_progress INTEGER NOT NULL,
        state              TEXT NOT NULL,
        since              INTEGER NOT NULL
    );
    "#,
    // 5: job caches, artifacts and memoized jobs: each cache a job declared (its key,
    // hit/fallback/miss, what was restored and whether it was saved), each artifact a job
    // published, a memoized job's input hash and the run a cached job's result came from.
    r#"
    ALTER TABLE jobs ADD COLUMN memo_hash TEXT;
    ALTER TABLE jobs ADD COLUMN cached_from TEXT;
    CREATE INDEX jobs_by_memo ON jobs (memo_hash) WHERE memo_hash IS NOT NULL;
    CREATE TABLE job_caches (
        run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        job_id       TEXT NOT NULL,
        name         TEXT NOT NULL,
        key          TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        restored_key TEXT,
        saved        TEXT,
        size_bytes   INTEGER,
        PRIMARY KEY (run_id, job_id, name)
    );
    CREATE TABLE artifacts (
        run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        job_id     TEXT NOT NULL,
        name       TEXT NOT NULL,
        path       TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        files      INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, job_id, name)
    );
    "#,
];
