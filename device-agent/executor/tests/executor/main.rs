//! The executor against real jobs: the example modules built from
//! `device-agent/jobs/guest` (via `fleet-example-jobs`), each on both backends, plus
//! small hand-written modules for the ABI's edge cases.
//!
//! Every test that runs a hostile job runs `hello` on the same executor afterwards:
//! a job's failure must never leave the executor unusable.
#![allow(clippy::unwrap_used)]

mod abi_edges;
mod component;
mod examples;
mod hostile;
mod inference;
mod slicing;
mod support;
mod wasi;
