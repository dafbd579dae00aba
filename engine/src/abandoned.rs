//! Runs whose process died are shown `failed`, never left `running`.
//!
//! A live run holds an exclusive lock on `runs/<id>/run.lock` for its whole life. A reader that
//! can take that lock knows the process is gone (the kernel drops locks of dead processes, even
//! after `kill -9`), and records the run as failed with the reason. Job processes of such a run
//! that are still alive on this host (their supervisors were killed too) are stopped then.

use crate::home::Home;
use crate::now_ms;
use crate::store::{RunRecord, Store, StoreError};
use std::fs::File;
use std::path::Path;

/// Whether the process that owns this run still holds its lock.
pub fn is_alive(run: &RunRecord) -> bool {
    let lock = Home::run_lock(Path::new(&run.log_dir));
    let Ok(f) = File::options().read(true).write(true).open(&lock) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => false,
        Err(_) => true,
    }
}

/// Fail every unfinished run whose process is gone. Returns the ids it fixed.
pub fn abandoned_runs(store: &mut Store) -> Result<Vec<String>, StoreError> {
    let mut fixed = Vec::new();
    for run in store.unfinished_runs()? {
        if is_alive(&run) {
            continue;
        }
        let reason = format!(
            "the sparkwing process running this run (pid {} on {}) exited before the run finished",
            run.pid, run.host
        );
        if store.fail_abandoned_run(&run.id, &reason, now_ms())? {
            if run.host == crate::host_name() {
                stop_leftover_processes(&run.id);
            }
            fixed.push(run.id);
        }
    }
    Ok(fixed)
}

/// Open the store for reading, with abandoned runs already reconciled.
pub fn open_store(home: &Home) -> Result<Store, StoreError> {
    let mut store = Store::open(&home.root)?;
    abandoned_runs(&mut store)?;
    Ok(store)
}

/// SIGKILL every process of ours that still carries the run's `SPARKWING_RUN_ID` (every job
/// process and what it started inherit it). Normally none is left: each job's supervisor kills
/// its job when the run's process dies; this covers supervisors that were killed as well.
fn stop_leftover_processes(run_id: &str) {
    let needle = format!("SPARKWING_RUN_ID={run_id}");
    let me = std::process::id() as i32;
    for pid in crate::supervisor::process_ids().filter(|&p| p != me) {
        // Unreadable for another user's processes, which are not ours to stop.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
