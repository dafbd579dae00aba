//! The metadata schema, defined once for both databases: the append-only migrations, the version
//! this binary writes, and the rule that a database newer than the binary is refused. A backend
//! supplies only how it keeps its version and runs SQL: SQLite in `user_version`
//! ([`crate::sqlite`]), PostgreSQL in the table `sparkwing_schema` under an advisory lock
//! ([`crate::postgres`]).

use crate::error::{Result, StateError};

/// Which database a migration is written out for. Their schemas differ only in column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sql` with its column types filled in: `{int64}` (a 64-bit integer) and `{bool}`.
    fn render(self, sql: &str) -> String {
        let (int64, boolean) = match self {
            Dialect::Sqlite => ("INTEGER", "INTEGER"),
            Dialect::Postgres => ("BIGINT", "BOOLEAN"),
        };
        sql.replace("{int64}", int64).replace("{bool}", boolean)
    }
}

/// Never edit a migration that has shipped; add one (the tests pin each one's text as each
/// database receives it).
const MIGRATIONS: &[&str] = &[
    // 1: tokens, the run index, job states, webhook deliveries, the log index.
    r#"
    CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        hash       TEXT NOT NULL UNIQUE,
        principal  TEXT NOT NULL,
        scopes     TEXT NOT NULL,
        created_ms {int64} NOT NULL,
        expires_ms {int64},
        revoked    {bool} NOT NULL,
        run_ns     TEXT,
        run_name   TEXT,
        upload     TEXT,
        pool_uid   TEXT
    );
    CREATE INDEX tokens_by_expiry ON tokens (expires_ms) WHERE expires_ms IS NOT NULL;
    CREATE INDEX tokens_by_run ON tokens (run_ns, run_name) WHERE run_ns IS NOT NULL;

    CREATE TABLE runs (
        namespace   TEXT NOT NULL,
        name        TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        phase       TEXT NOT NULL,
        created_ms  {int64} NOT NULL,
        finished_ms {int64},
        view        TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE INDEX runs_by_created ON runs (created_ms DESC, namespace, name);
    CREATE INDEX runs_by_pipeline ON runs (pipeline, created_ms DESC, namespace, name);
    CREATE INDEX runs_by_finished ON runs (finished_ms DESC) WHERE finished_ms IS NOT NULL;

    CREATE TABLE job_states (
        namespace TEXT NOT NULL,
        run       TEXT NOT NULL,
        job       TEXT NOT NULL,
        state     TEXT NOT NULL,
        PRIMARY KEY (namespace, run, job)
    );

    CREATE TABLE deliveries (
        id          TEXT PRIMARY KEY,
        answer      TEXT NOT NULL,
        received_ms {int64} NOT NULL
    );

    CREATE TABLE log_index (
        namespace TEXT NOT NULL,
        run       TEXT NOT NULL,
        job       TEXT NOT NULL,
        next_seq  {int64} NOT NULL,
        bytes     {int64} NOT NULL,
        lines     {int64} NOT NULL,
        capped    {bool} NOT NULL,
        PRIMARY KEY (namespace, run, job)
    );
    "#,
    // 2: dashboard login sessions (the cluster dashboard's cookie, by the hash of its secret).
    r#"
    CREATE TABLE sessions (
        hash       TEXT PRIMARY KEY,
        token_id   TEXT NOT NULL,
        principal  TEXT NOT NULL,
        scopes     TEXT NOT NULL,
        csrf       TEXT NOT NULL,
        created_ms {int64} NOT NULL,
        expires_ms {int64} NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions (expires_ms);
    CREATE INDEX sessions_by_token ON sessions (token_id);
    "#,
    // 3: approval gate decisions (the first one recorded on a gate stands).
    r#"
    CREATE TABLE gate_decisions (
        namespace  TEXT NOT NULL,
        run        TEXT NOT NULL,
        gate       TEXT NOT NULL,
        decision   TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        at_ms      {int64} NOT NULL,
        comment    TEXT,
        timed_out  {bool} NOT NULL,
        PRIMARY KEY (namespace, run, gate)
    );
    "#,
    // 4: concurrency groups of cluster runs: per group, each run's entry (`job` empty) and each
    // job's entry (`job` its id) in arrival order, holding a slot or waiting, with its runner's
    // lease.
    r#"
    CREATE TABLE concurrency_slots (
        group_key          TEXT NOT NULL,
        namespace          TEXT NOT NULL,
        run                TEXT NOT NULL,
        job                TEXT NOT NULL,
        position           {int64} NOT NULL,
        holding            {bool} NOT NULL,
        group_limit        {int64} NOT NULL,
        cancel_in_progress {bool} NOT NULL,
        since_ms           {int64} NOT NULL,
        lease_until_ms     {int64} NOT NULL,
        cancel_asked       {bool} NOT NULL,
        PRIMARY KEY (group_key, namespace, run, job)
    );
    CREATE INDEX concurrency_slots_by_run ON concurrency_slots (namespace, run);
    "#,
    // 5: dependency caches of cluster runs (per namespace and cache scope, the first commit of a
    // key stands) and the artifacts of cluster runs' jobs; both keep a chunk manifest (JSON).
    r#"
    CREATE TABLE cache_entries (
        namespace    TEXT NOT NULL,
        scope        TEXT NOT NULL,
        cache_key    TEXT NOT NULL,
        manifest     TEXT NOT NULL,
        size_bytes   {int64} NOT NULL,
        created_ms   {int64} NOT NULL,
        last_used_ms {int64} NOT NULL,
        PRIMARY KEY (namespace, scope, cache_key)
    );

    CREATE TABLE artifacts (
        namespace  TEXT NOT NULL,
        run        TEXT NOT NULL,
        job        TEXT NOT NULL,
        name       TEXT NOT NULL,
        manifest   TEXT NOT NULL,
        size_bytes {int64} NOT NULL,
        files      {int64} NOT NULL,
        created_ms {int64} NOT NULL,
        PRIMARY KEY (namespace, run, job, name)
    );
    "#,
    // 6: memoized jobs of cluster runs: a job's success by namespace, cache scope, job id and
    // input hash, with the run it ran in, its outputs (JSON) and when it finished. Its artifacts
    // are the run's (`artifacts`); a record goes with its run.
    r#"
    CREATE TABLE memo_results (
        namespace   TEXT NOT NULL,
        scope       TEXT NOT NULL,
        job         TEXT NOT NULL,
        input_hash  TEXT NOT NULL,
        run         TEXT NOT NULL,
        outputs     TEXT NOT NULL,
        finished_ms {int64} NOT NULL,
        PRIMARY KEY (namespace, scope, job, input_hash, run)
    );
    CREATE INDEX memo_results_by_run ON memo_results (namespace, run);
    "#,
    // 7: the runs list by namespace and by phase in its own order. Without them a list filtered
    // by namespace read and sorted every run of the namespace (SQLite chose the primary key and a
    // temporary b-tree) to answer a page of 100.
    r#"
    CREATE INDEX runs_by_namespace ON runs (namespace, created_ms DESC, name);
    CREATE INDEX runs_by_phase ON runs (phase, created_ms DESC, namespace, name);
    "#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migrations a database at version `found` still needs, in order, each with the version it
/// brings the database to; [`StateError::SchemaTooNew`] (naming `location`) when the database is
/// newer than this binary.
pub(crate) fn pending(found: i64, dialect: Dialect, location: &str) -> Result<Vec<(i64, String)>> {
    if found > SCHEMA_VERSION {
        return Err(StateError::SchemaTooNew {
            location: location.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(MIGRATIONS
        .iter()
        .enumerate()
        .skip(found as usize)
        .map(|(i, sql)| (i as i64 + 1, dialect.render(sql)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// sha256 of each shipped migration as SQLite and PostgreSQL receive it.
    const SHIPPED: &[(&str, &str)] = &[
        (
            "6f991a70f4c8e3ec48f0d62741195bc12ae764b94df5d5cf3c4fdadbd4ccac87",
            "ec54f02f6b8e9bf42fee18a2afdc767f2de7c7a6f92e4a0c87c84b69937885f9",
        ),
        (
            "112b2830d5bfa6286f6ef4b13d22fa998c7165c30896cf8a4f2d5cf454cadf9b",
            "93bca60d813f25a872fec3d86c6410d6a2114d3c17b4f4d14d8fc7b38717f962",
        ),
        (
            "cdd4c08de36dbaf0202c765c1ae76cbece5245e2bf223cfd414572b52c297f18",
            "8012c40abd9a4f0095ac5e2b55a883ce800f664861dc2626d7e1d13d3f3c9ad8",
        ),
        (
            "89c1bfb3665d3f49d699489f4b329a8620df23e8a8e22d186c036f417aa1cc9f",
            "a8f84614e215f948ed212419d767d8196be8f74255044bd95d450bb6a9d06d73",
        ),
        (
            "8846c31fc9e756d427881a44a480031f6fdcf7dabf7762f53c58ef5c7f5e4fb0",
            "ea741123b08410264476c3f90adafe5f40639deb6c264b95c236e702226c2f41",
        ),
        (
            "f4679be5499763337d98fcf3ae7da0f1adceab57f4c3083484b92e353ff7b6d0",
            "4863af454b0c0b336a3e483d5ce011c0795a6e27d87480fe06f207bd57150a63",
        ),
        (
            "923ee1370d485c849e2d73b0402ffd98f53a4f5d7f9c56aee1c3db6b8eaa9994",
            "923ee1370d485c849e2d73b0402ffd98f53a4f5d7f9c56aee1c3db6b8eaa9994",
        ),
    ];

    fn sha256(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn shipped_migrations_are_never_edited() {
        let sqlite = pending(0, Dialect::Sqlite, "test").unwrap();
        let postgres = pending(0, Dialect::Postgres, "test").unwrap();
        for (i, (lite, pg)) in SHIPPED.iter().enumerate() {
            assert_eq!(sqlite[i].0, i as i64 + 1);
            assert_eq!(sha256(&sqlite[i].1), *lite, "SQLite migration {}", i + 1);
            assert_eq!(
                sha256(&postgres[i].1),
                *pg,
                "PostgreSQL migration {}",
                i + 1
            );
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for (version, sql) in pending(0, dialect, "test").unwrap() {
                assert!(!sql.contains('{'), "{dialect:?} migration {version}: {sql}");
            }
        }
        let sqlite = pending(0, Dialect::Sqlite, "test").unwrap();
        assert!(!sqlite[0].1.contains("BIGINT") && !sqlite[0].1.contains("BOOLEAN"));
    }

    #[test]
    fn a_database_gets_what_it_lacks_and_a_newer_one_is_refused() {
        assert_eq!(
            pending(0, Dialect::Sqlite, "db").unwrap().len() as i64,
            SCHEMA_VERSION
        );
        assert!(pending(SCHEMA_VERSION, Dialect::Postgres, "db")
            .unwrap()
            .is_empty());
        let err = pending(SCHEMA_VERSION + 1, Dialect::Postgres, "the db").unwrap_err();
        assert!(
            matches!(&err, StateError::SchemaTooNew { location, found, supported }
                if location == "the db" && *found == SCHEMA_VERSION + 1 && *supported == SCHEMA_VERSION),
            "{err}"
        );
    }
}
