//! Small text formats shared by the commands and the dashboard.

/// A short time for tables (UTC, `YYYY-MM-DD HH:MM:SS`).
pub fn format_time(ms: i64) -> String {
    sparkwing_core::time::format_utc(ms, "%Y-%m-%d %H:%M:%S")
}
