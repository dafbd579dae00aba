//! The SDK's error type: a message, convertible from any standard error so `?` just works.

use std::fmt;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error carrying a human-readable message.
///
/// Any `std::error::Error` converts into it (its source chain is appended to the message), so `?` works
/// on I/O and parse errors. Like `anyhow::Error`, it deliberately does not implement `std::error::Error`
/// itself, because that would conflict with the blanket conversion.
pub struct Error {
    message: String,
    command_end: Option<CommandEnd>,
}

/// How a command that failed ended. An error from a failed command carries it (through
/// [`Error::context`] too), so a job that fails with it fails with the command's own exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnd {
    /// Exited with this non-zero code.
    Exited(i32),
    /// Killed by this signal.
    Signalled(i32),
}

impl Error {
    /// Creates an error with the given message.
    pub fn msg(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            command_end: None,
        }
    }

    /// Prefixes the message with `context: `.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error {
            message: format!("{context}: {}", self.message),
            command_end: self.command_end,
        }
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How the failed command behind this error ended, if a command's failure caused it.
    pub fn command_end(&self) -> Option<CommandEnd> {
        self.command_end
    }

    pub(crate) fn with_command_end(mut self, end: CommandEnd) -> Error {
        self.command_end = Some(end);
        self
    }
}

/// Shorthand for [`Error::msg`], e.g. `return Err(fail("no such target"))`.
pub fn fail(message: impl Into<String>) -> Error {
    Error::msg(message)
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(err: E) -> Error {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            let text = s.to_string();
            // Many errors already repeat their source in their own message.
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        Error {
            message,
            command_end: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Plain message, so `fn main() -> sparkwing::Result<()>` and `unwrap` print readably.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Adds context to errors and turns `None` into an error: `fs::read(p).context("reading config")?`.
pub trait Context<T> {
    /// Wraps the error (or `None`) with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T>;

    /// Like [`Context::context`], computing the context only on failure.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::msg(context.to_string()))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn converts_std_errors_with_sources() {
        let e: Error = Outer(std::io::Error::other("disk gone")).into();
        assert_eq!(e.to_string(), "outer failed: disk gone");
        let e: Error = "x"
            .parse::<i64>()
            .err()
            .map(Error::from)
            .unwrap_or(fail("?"));
        assert_eq!(e.to_string(), "invalid digit found in string");
    }

    #[test]
    fn question_mark_and_context() {
        fn parse(s: &str) -> Result<i64> {
            s.parse::<i64>().context(format!("parsing {s:?}"))
        }
        assert_eq!(
            parse("x").map_err(|e| e.to_string()),
            Err("parsing \"x\": invalid digit found in string".to_string())
        );
        let r: Result<i64> = Err(fail("inner"));
        assert_eq!(
            r.with_context(|| "outer").map_err(|e| format!("{e:?}")),
            Err("outer: inner".to_string())
        );
        assert_eq!(
            None::<i32>.context("missing").map_err(|e| e.to_string()),
            Err("missing".to_string())
        );
    }

    #[test]
    fn bail_macro() {
        fn f(n: i32) -> Result<i32> {
            if n > 1 {
                crate::bail!("too big: {n}");
            }
            Ok(n)
        }
        assert_eq!(f(5).map_err(|e| e.to_string()), Err("too big: 5".into()));
        assert_eq!(f(1).ok(), Some(1));
    }
}
