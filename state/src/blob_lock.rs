//! The blob lock: what keeps garbage collection from deleting a stored blob that a writer has just
//! found stored and is about to name in a manifest.
//!
//! Without it, collection could list what names blobs, then an upload or a cache commit could find
//! an old, unnamed blob stored (so its client does not send it again) and record a manifest naming
//! it, and collection would then delete the blob as unnamed: the manifest would name a blob that
//! no longer exists. Writers hold the lock in [`BlobLockMode::Reuse`] from their check to their
//! record; collection holds it in [`BlobLockMode::Sweep`] from its listing to its deletions. So a
//! writer's check and record happen either before a sweep's listing (which then sees the record)
//! or after its deletions (which the check then sees).
//!
//! It lives with the metadata, the one store every replica shares: a lock file beside the SQLite
//! database (one node), a PostgreSQL advisory lock on its own session (any number of replicas; a
//! replica that dies releases it with its connection).

/// How [`crate::MetadataStore::lock_blobs`] holds the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobLockMode {
    /// A writer relying on stored blobs: from checking that its blobs are stored to recording the
    /// manifest that names them. Any number at once.
    Reuse,
    /// Collection: from listing what names blobs to deleting the blobs nothing names. Alone.
    Sweep,
}

/// The blob lock, held until dropped.
pub struct BlobLock {
    _held: Box<dyn Send + Sync>,
}

impl BlobLock {
    pub(crate) fn new(held: impl Send + Sync + 'static) -> Self {
        BlobLock {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for BlobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobLock")
    }
}
