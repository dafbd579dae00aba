//! How a command ends: its exit code (`ExitCode`, the engine's: a run ends with one) and the
//! error that ends it.

pub use sparkwing_engine::exit::ExitCode;

/// An error that ends a command: printed as `error: <message>` with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
}
