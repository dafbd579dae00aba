//! Diagnostics: warnings and progress notes the command writes to stderr besides its answer,
//! as `tracing` events filtered by `SPARKWING_LOG`.
//!
//! Each event is one line, its level written the way the CLI always wrote it: `warning: ` for
//! WARN, `error: ` for ERROR, nothing for INFO (the message says what it is: `runner: ...`,
//! `note: ...`), `debug: `/`trace: ` below. No time stamps or targets, so a diagnostic reads as
//! it did when it was an `eprintln!`. The default shows INFO and above of this binary only;
//! libraries' events (bollard, hyper, ...) show only when asked for by name.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use sparkwing_engine::env_vars;

/// What is shown when `SPARKWING_LOG` is unset or empty.
const DEFAULT_FILTER: &str = "sparkwing=info";

/// A bad `SPARKWING_LOG`.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not a log filter ({reason}); use a level (error, warn, info, debug, trace, off) or target=level directives, e.g. sparkwing=debug")]
pub struct BadFilter {
    var: &'static str,
    value: String,
    reason: String,
}

/// The filter `SPARKWING_LOG` (`value`) asks for. A bare level (`debug`) applies to this binary
/// only, as the default does; directives naming targets are taken as written.
pub fn filter(value: Option<&str>) -> Result<EnvFilter, BadFilter> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    let directives = match value {
        None => DEFAULT_FILTER.to_string(),
        Some(v) if v.parse::<tracing::level_filters::LevelFilter>().is_ok() => {
            format!("sparkwing={v}")
        }
        Some(v) => v.to_string(),
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| BadFilter {
            var: env_vars::SPARKWING_LOG,
            value: value.unwrap_or_default().to_string(),
            reason: e.to_string(),
        })
}

/// Installs the stderr subscriber for the whole process. A bad `SPARKWING_LOG` is reported and
/// the default used: diagnostics must not stop a command.
pub fn init() {
    let value = std::env::var(env_vars::SPARKWING_LOG).ok();
    let (filter, bad) = match filter(value.as_deref()) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
    let _ = tracing::subscriber::set_global_default(subscriber(filter, std::io::stderr));
    if let Some(e) = bad {
        tracing::warn!("{e}; showing the default (info)");
    }
}

fn subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(Plain)
        .finish()
}

/// `warning: message key=value`: the level as the CLI words it, then the event's fields.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        writer.write_str(prefix)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Everything written by the subscriber, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    fn emitted(value: Option<&str>) -> String {
        let out = Captured::default();
        let sub = subscriber(filter(value).unwrap(), out.clone());
        tracing::subscriber::with_default(sub, || {
            // Targets as in the binary (this test crate is the `sparkwing` binary's).
            tracing::error!("cannot cancel run ci/r1");
            tracing::warn!("not uploaded: a.txt");
            tracing::info!("runner: run ci/r1, attempt 1");
            tracing::debug!(lines = 3, "sink flushed");
            tracing::warn!(target: "hyper", "a library's warning");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_default_shows_what_eprintln_showed() {
        assert_eq!(
            emitted(None),
            "error: cannot cancel run ci/r1\nwarning: not uploaded: a.txt\nrunner: run ci/r1, attempt 1\n"
        );
        assert_eq!(emitted(Some("")), emitted(None));
    }

    #[test]
    fn sparkwing_log_raises_and_lowers_the_level() {
        assert_eq!(
            emitted(Some("warn")),
            "error: cannot cancel run ci/r1\nwarning: not uploaded: a.txt\n"
        );
        assert!(emitted(Some("debug")).ends_with("debug: sink flushed lines=3\n"));
        assert_eq!(emitted(Some("off")), "");
        // A library's events show only when named.
        assert!(!emitted(Some("trace")).contains("a library's"));
        assert!(emitted(Some("hyper=warn")).contains("warning: a library's warning\n"));
    }

    #[test]
    fn a_bad_filter_names_the_variable_and_the_fix() {
        let e = filter(Some("sparkwing=loud")).unwrap_err().to_string();
        assert!(
            e.starts_with("SPARKWING_LOG=\"sparkwing=loud\" is not a log filter"),
            "{e}"
        );
        assert!(e.contains("e.g. sparkwing=debug"), "{e}");
    }
}
