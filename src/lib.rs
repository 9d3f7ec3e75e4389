//! lagbudget: consistency budgets for eventually consistent systems.
//!
//! Code map: `config` turns YAML into the validated `model`; `probe` measures (the only code
//! that talks to measured systems); `schedule` runs one task per probe; `state` keeps what
//! they found; `evaluate` turns it into budget states without IO; `metrics`, `status` and
//! `server` show a snapshot of it (`families` writes the Prometheus text format for `metrics`
//! and the kinds' detail families); `daemon` ties them together and handles reloads; `oneshot`
//! serves the `probe` and `check --connect` commands. See ARCHITECTURE.md for the invariants.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod evaluate;
pub mod families;
pub mod generate;
pub mod history;
pub mod metrics;
pub mod model;
pub mod oneshot;
pub mod page;
pub mod probe;
pub mod runbooks;
pub mod sample;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod shared;
pub mod state;
pub mod status;

pub use daemon::{ConfigLoader, RunSettings, run};
pub use shared::Shared;

#[cfg(test)]
mod testing;
