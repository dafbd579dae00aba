//! `/api/v1/runs`, by concern: [`trigger`] (create a run and its runner credential), [`read`]
//! (list and get), [`rerun`] (a whole-run re-run of a live or archived run), [`end`] (cancel, finish, an external run's end), [`report`] (job states and
//! branch checks from runners), [`gates`] (decisions on approval gates), [`park`] (the park of a run whose runner
//! exits while only gates wait), [`concurrency`] (the concurrency groups of cluster runs), [`job_pods`] (the own
//! pods of placed jobs), and [`view`] (how a PipelineRun is shown). The bodies are
//! `sparkwing-api`'s.

pub(crate) mod concurrency;
mod end;
mod gates;
mod job_pods;
mod park;
mod read;
mod report;
mod rerun;
mod trigger;
mod view;

pub use concurrency::{enter as enter_group, leave as leave_group};
pub use end::{cancel, finish};
pub use gates::{check_decider, decide as decide_gate, gates_of, get_decision as get_gate};
pub use job_pods::{delete as delete_job_pod, look as job_pod, start as start_job_pod};
pub use read::{get_run, list, ListQuery};
pub use report::{put_branch_check, put_job_state};
pub use rerun::{rerun, rerun_run};
pub use trigger::trigger;
