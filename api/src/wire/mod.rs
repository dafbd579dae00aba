//! Every body of `docs/api.md` (and the webhook answers of `docs/webhooks.md`), by route group. Each type is `Serialize + Deserialize` and
//! writes exactly the JSON the docs show: camelCase names, optional fields left out when absent.
//! Requests refuse unknown fields where the server always did (a client cannot write what the
//! server sets, such as `triggeredBy`).

pub mod admin;
pub mod concurrency;
pub mod error;
pub mod gates;
pub mod job_pods;
pub mod logs;
pub mod pools;
pub mod runs;
pub mod storage;
pub mod tokens;
pub mod uploads;
pub mod webhooks;

#[cfg(test)]
mod tests;

pub use admin::{GcReport, GcRequest};
pub use concurrency::{GroupRequest, GroupState, GroupStatus};
pub use error::ErrorBody;
pub use gates::{GateAnswer, GateDecision, GateDecisionRequest};
pub use job_pods::{JobPodPhase, JobPodRequest, JobPodView};
pub use logs::{IngestReport, LogLine, LogPage, LogRecord, LogStream};
pub use pools::{ClaimAnswer, ClaimRequest};
pub use runs::{outputs_size, MAX_JOB_OUTPUTS_BYTES};
pub use runs::{
    BranchCheck, CancelMode, CancelRequest, CreatedRun, ExternalSource, FinishRequest, GitSource,
    JobStateReport, LocalSource, ParentRef, ReportedJobState, RunList, RunView, Source,
    TriggerRequest, TriggerVia, TriggeredBy, UploadSource,
};
pub use storage::{
    ArtifactList, ArtifactPut, ArtifactView, CacheCommit, CacheEntryView, CacheList, CacheLookup,
    CachePrune, CachePruned, MemoLookup, MemoLookupRequest, MemoPut, MemoRecorded, StoreAnswer,
    StoreState,
};
pub use tokens::{CreateTokenRequest, CreatedToken, TokenInfo, TokenList, WhoAmI};
pub use uploads::{BlobAnswer, BlobBatchAnswer, UploadAnswer};
pub use webhooks::{CancelledRun, DeliveryRecord, Ignored, Pong, SkippedPipeline, WebhookRun};

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}
