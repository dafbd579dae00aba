//! Request handlers, one module per resource.

pub mod admin;
pub mod dashboard;
pub mod logs;
pub mod pools;
pub mod runs;
pub mod storage;
pub mod uploads;
pub mod webhooks;
