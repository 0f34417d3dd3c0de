//! Cross-crate scenarios and repository-wide checks, in one test binary so that the 2-core CI
//! machine links it once.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod client_background;
mod client_e2e;
mod client_numbers;
mod conflict_wedges;
mod convergence;
mod example_routes;
mod http_adapter;
mod http_snapshot;
mod http_watch;
mod openapi;
mod support;
mod tidy;
