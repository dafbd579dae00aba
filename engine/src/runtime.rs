//! The `sparkwing` command's tokio runtime, one per process. A command that does async work (the
//! engine, Docker, the dashboard's server, a pool, a runner) builds it with [`build`] and drops it
//! when it ends, which stops what it spawned. The remote commands are blocking (`ureq`) and build
//! none; they watch for signals with [`on_signal`], on a thread of its own.

use std::time::Duration;

use futures_util::future::{select_all, FutureExt};
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};

/// Two workers: the engine and servers wait on processes and sockets, they do not compute.
const WORKERS: usize = 2;

/// How long [`on_signal`] waits for its handlers to be in place.
const HANDLERS_DEADLINE: Duration = Duration::from_secs(5);

/// The command's runtime.
pub fn build() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
}

/// Calls `then` on a thread of its own when the first of `signals` arrives (once). Returns once
/// the handlers are in place, so a signal sent after it returns is seen; if they cannot be
/// installed, nothing is watched (the signal's default action stays).
pub fn on_signal(signals: &[SignalKind], then: impl FnOnce() + Send + 'static) {
    let signals = signals.to_vec();
    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // The thread's own small runtime: it only waits for the signal.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready.send(());
            return;
        };
        rt.block_on(async move {
            let streams: Result<Vec<_>, _> = signals.into_iter().map(signal).collect();
            let _ = ready.send(());
            let Ok(mut streams) = streams else {
                return;
            };
            let waits = streams.iter_mut().map(|s| s.recv().boxed());
            let (got, _, _) = select_all(waits).await;
            if got.is_some() {
                then();
            }
        });
    });
    let _ = is_ready.recv_timeout(HANDLERS_DEADLINE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_after_on_signal_returns_is_seen_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        on_signal(
            &[SignalKind::user_defined1(), SignalKind::user_defined2()],
            move || tx.send(()).unwrap(),
        );
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR2).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the handler ran");
        // `then` ran once and was dropped with its sender.
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
    }

    #[test]
    fn the_runtime_runs_tasks_on_its_workers() {
        let rt = build().unwrap();
        let n = rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() });
        assert_eq!(n, 7);
    }
}
