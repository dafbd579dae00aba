//! The cluster dashboard: `sparkwing dashboard`'s pages (`sparkwing-dashboard`) over the API's
//! own storage, behind a login. [`login`]: the login form, the exchange of an API token for a
//! session cookie, logout; [`pages`]: the runs list across namespaces and a run's page with its
//! Cancel and Re-run buttons and the routes they post to (`runs:trigger`); [`gates`]: a run page's approval gates with their Approve
//! and Reject buttons (`approvals:write`, or an approver of the run's Pipeline) and the route
//! they post to; [`streams`]: the pages' server-sent events (the runs list, a
//! run's sections and its job's log from the state layer); [`view`]: a run of the API as the
//! pages show it. Sessions and CSRF: `crate::api::session`.

pub mod gates;
pub mod login;
pub mod pages;
pub mod streams;
mod view;
