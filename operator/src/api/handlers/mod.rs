//! Request handlers, one module per resource.

pub mod admin;
pub mod logs;
pub mod runs;
pub mod uploads;
