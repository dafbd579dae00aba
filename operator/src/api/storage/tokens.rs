//! The token table on disk: a snapshot `tokens.json` (`{"tokens": [...]}`) and a journal
//! `tokens.jsonl` of the changes since, one JSON line each: `{"add": <record>}`,
//! `{"revoke": "<id>"}`, `{"remove": "<id>"}`.
//!
//! A change is one short append to the journal, `fdatasync`ed before it counts, instead of the
//! whole table rewritten and synced: minting a run's token costs the same with 10 records or
//! 100,000. Opening replays the journal over the snapshot (a partial last line — a crash during
//! an append, never acknowledged — is ignored) and compacts: a new snapshot, an empty journal.
//! The table compacts again when the journal holds more entries than twice the live records.
//! Replaying is idempotent (an `add` replaces the record of its id), so a crash between writing
//! a snapshot and emptying the journal loses nothing.
//!
//! Callers hold this behind a mutex and call it from blocking threads (`spawn_blocking`): it does
//! disk IO. The in-memory table requests look tokens up in is elsewhere (`auth::TokenStore`), and
//! is never locked during IO.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{io, Storage, StorageError};

/// A stored token: never the token itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    /// Lowercase hex sha256 of the whole token string.
    pub hash: String,
    pub principal: String,
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub revoked: bool,
    /// Runner tokens: the upload their run's source is (immutable in the spec), so reading it
    /// needs no lookup of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// Pool tokens: the uid of the RunnerPool they were minted for, so a token of a deleted pool
    /// cannot speak for a later pool of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_uid: Option<String>,
}

/// One change of the token table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TokenOp {
    Add(TokenRecord),
    /// Mark revoked (people's and services' tokens: listed as revoked, their hash still known).
    Revoke(String),
    /// Forget the record (expired runner and pool tokens).
    Remove(String),
}

#[derive(Serialize, Deserialize, Default)]
struct Snapshot {
    tokens: Vec<TokenRecord>,
}

/// Entries below which the journal is never compacted.
const COMPACT_MIN: u64 = 1024;

/// The open journal.
pub struct TokenJournal {
    snapshot: PathBuf,
    path: PathBuf,
    file: fs::File,
    /// Entries in the journal since the last compaction.
    entries: u64,
    /// Length of the journal in complete entries.
    len: u64,
}

/// Apply `op` to `records` (kept in creation order).
pub fn tokens_apply(records: &mut Vec<TokenRecord>, op: TokenOp) {
    match op {
        TokenOp::Add(rec) => match records.iter_mut().find(|r| r.id == rec.id) {
            Some(r) => *r = rec,
            None => records.push(rec),
        },
        TokenOp::Revoke(id) => {
            if let Some(r) = records.iter_mut().find(|r| r.id == id) {
                r.revoked = true;
            }
        }
        TokenOp::Remove(id) => records.retain(|r| r.id != id),
    }
}

impl Storage {
    /// Load the token table (snapshot and journal), compact it, and open the journal.
    pub fn open_tokens(&self) -> Result<(Vec<TokenRecord>, TokenJournal), StorageError> {
        let snapshot = self.root.join("tokens.json");
        let path = self.root.join("tokens.jsonl");
        let mut records = match fs::read(&snapshot) {
            Ok(bytes) => {
                serde_json::from_slice::<Snapshot>(&bytes)
                    .map_err(|source| StorageError::Json {
                        path: snapshot.clone(),
                        source,
                    })?
                    .tokens
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("reading", &snapshot)(e)),
        };
        match fs::File::open(&path) {
            Ok(f) => {
                let mut reader = BufReader::new(f);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let n = reader
                        .read_until(b'\n', &mut line)
                        .map_err(io("reading", &path))?;
                    // The end, or a partial entry a crash left (never acknowledged).
                    if n == 0 || line.last() != Some(&b'\n') {
                        break;
                    }
                    let op: TokenOp =
                        serde_json::from_slice(&line).map_err(|source| StorageError::Json {
                            path: path.clone(),
                            source,
                        })?;
                    tokens_apply(&mut records, op);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("opening", &path)(e)),
        }
        // Not truncated here: the snapshot with these entries is written first (compact).
        let file = super::append_private(&path).map_err(io("opening", &path))?;
        let mut journal = TokenJournal {
            snapshot,
            path,
            file,
            entries: 0,
            len: 0,
        };
        journal.compact(self, &records)?;
        Ok((records, journal))
    }
}

impl TokenJournal {
    /// Append `ops`, on disk when this returns `Ok` (nothing of them when it fails).
    pub fn append(&mut self, ops: &[TokenOp]) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        for op in ops {
            serde_json::to_writer(&mut buf, op).map_err(|source| StorageError::Json {
                path: self.path.clone(),
                source,
            })?;
            buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(io("appending to", &self.path));
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.entries += ops.len() as u64;
        Ok(())
    }

    /// Whether the journal is worth compacting, with `live` records in the table.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.entries > COMPACT_MIN.max(2 * live as u64)
    }

    /// Write `records` as the snapshot (atomically), then empty the journal.
    pub fn compact(
        &mut self,
        storage: &Storage,
        records: &[TokenRecord],
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(&Snapshot {
            tokens: records.to_vec(),
        })
        .map_err(|source| StorageError::Json {
            path: self.snapshot.clone(),
            source,
        })?;
        storage.write_atomic(&self.snapshot, &bytes)?;
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(io("emptying", &self.path))?;
        self.len = 0;
        self.entries = 0;
        Ok(())
    }
}
