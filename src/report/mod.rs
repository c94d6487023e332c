//! DR report files for audits.
//!
//! - [`schema`] — `dr-report.json` of one drill (`lifeboat.dr-report/1`), the source of truth;
//! - [`chain`] — signatures (ed25519) and the per-plan hash chain, and their verification;
//! - [`sealed`] — how report objects are sealed, stored, listed and opened;
//! - [`store`] — where reports are kept: every destination (`reports/`) and the state
//!   directory;
//! - [`period`] — the period report for audits (`lifeboat.period-report/1`);
//! - [`render`] — Markdown and self-contained HTML (inline SVG charts), the post-mortem draft;
//! - [`trend`] — the robust RTO trend and projected breach;
//! - [`verified`] — records of what `verify` read, stored in the region it read, for the
//!   period report's read-data coverage.
//!
//! The use cases are in `ops::report`; this module knows nothing of the CLI.

pub mod chain;
pub mod period;
pub mod render;
pub mod schema;
pub mod sealed;
pub mod store;
pub mod trend;
pub mod verified;
