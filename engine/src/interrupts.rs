//! SIGINT and SIGTERM as a run sees them: the first asks for a graceful stop (running jobs get
//! SIGTERM, `finally` jobs still run), every later one for a hard stop. Every executor's host loop
//! reads its signals here, so the rule exists once.

use std::io;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// One interrupt of the run's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The signal's name, as the run prints it (`SIGINT`, `SIGTERM`).
    pub signal: &'static str,
    /// A second (or later) interrupt: kill at once.
    pub hard: bool,
}

/// The process's SIGINT and SIGTERM handlers (installed at admission, so a signal while queued or
/// planning never kills the process unrecorded) and how many came so far.
pub struct Interrupts {
    sigint: Signal,
    sigterm: Signal,
    count: u32,
}

impl Interrupts {
    pub fn install() -> io::Result<Interrupts> {
        Ok(Interrupts {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            count: 0,
        })
    }

    /// Wait for the next SIGINT or SIGTERM.
    pub async fn next(&mut self) -> Interrupt {
        let signal = tokio::select! {
            _ = self.sigint.recv() => "SIGINT",
            _ = self.sigterm.recv() => "SIGTERM",
        };
        self.count += 1;
        Interrupt {
            signal,
            hard: self.count > 1,
        }
    }
}
