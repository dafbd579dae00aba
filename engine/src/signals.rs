//! Signal dispositions this process restores.

/// Read commands die quietly when their reader goes away (`sparkwing runs list | head`), like
/// other Unix tools, instead of panicking on a closed stdout. `run` keeps Rust's default (SIGPIPE
/// ignored): a closed stdout must not kill a run, whose record and logs are still kept.
/// Also used by a job's supervisor to die of the signal that killed the job.
#[allow(unsafe_code)]
pub fn restore_default_signal(sig: nix::sys::signal::Signal) {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: called from the main thread of a process that installs no signal handlers (at
    // start-up, or in a supervisor, which has no other threads); SIG_DFL is always valid.
    unsafe {
        let _ = signal(sig, SigHandler::SigDfl);
    }
}
