//! lifeboat: backups that prove they restore.
//!
//! # Layout
//! Three floors. The CLI parses and renders; the application layer ([`ops`]) holds one
//! module per use case; below it, each module is one stage of the data's journey, and no
//! stage imports one above it. Neutral helpers ([`sys`]) sit under everything.
//!
//! ```text
//! cli (clap, rendering, exit codes)       main.rs -> cli::main
//!  |
//! ops (backup, restore, drill, verify, sync, snapshots, status, catalog, preflight,
//!  |   run_due, keys, health; target = where the data lives; record = catalog writes)
//!  v
//! plan  ->  source  ->  pipeline  ->  repo  ->  store (local | s3, one per region)
//!                                       |
//!             drill (env + restore + checks + measure)  ->  catalog
//! schedule (cron, due-ness)                        sys (cancel, clock, host, processes)
//! ```
//! A use case takes a resolved [`ops::target::Target`] and a request, returns a report with
//! `exit_code()`, and never prints: what happens on the way is an [`ops::Event`] for the
//! caller's [`ops::Observer`]. `run-due`, the CLI and the tests call the same functions.
//! - [`cli`] — clap definitions, one file per command group (none imports another), the
//!   rendering of reports and events, passwords from flags or a prompt, signals.
//! - [`ops`] — the use cases (see its module documentation).
//! - [`sys`] — cancellation, the clock, host identity, child processes and tool lookup,
//!   human-readable sizes: nothing in it knows about backups.
//! - [`plan`] — plan files: jobs, schedules, objectives, destinations, secrets, drills;
//!   validation with errors that name the file, line, key and fix.
//! - [`secret`] — where a password comes from (file, environment variable, systemd
//!   credential), shared by plans and database sources.
//! - [`ids`] — newtypes for the 32-byte ids (blobs, packs, snapshots, files).
//! - [`crypto`] — the repository keys: subkey derivation, keyed blob ids, seal/open (AEAD).
//! - [`store`] — `trait Store` (get/put/list/delete/head by key): a local directory, an S3
//!   bucket, and decorators — retry (backoff, watchdog, deadline, adaptive concurrency) and
//!   multi-region fan-out. It knows nothing about backups or crypto.
//! - [`repo`] — the repository format v1: config, key slots, packs, index, trees, snapshots,
//!   catch-up between regions (`repo::sync`),
//!   locks and verification (see `docs/format.md`).
//! - [`pipeline`] — content-defined chunking, dedup, compression, encryption and packing with
//!   bounded memory, spread over all cores.
//! - [`source`] — what is backed up: directory trees, PostgreSQL and MariaDB dumps, btrfs,
//!   block, LVM and ZFS volumes; each only produces data (the commit protocol around it is
//!   `ops::backup`'s); `source::spec` builds a source from a job, `source::preflight` checks
//!   one.
//! - [`drill`] — one restore drill (directory or database) into a throwaway environment
//!   (`drill::env`), its restore tests (`drill::checks`) and measurements (`drill::measure`);
//!   which jobs, where and how it is recorded is `ops::drill`'s.
//! - [`report`] — drill reports (signed, chained, in every destination) and the period report
//!   for audits: JSON, Markdown, HTML with SVG charts; the RTO trend.
//! - [`restore`] — snapshot → files, verified blob by blob, written into a staging area first.
//! - [`catalog`] — sqlx (SQLite file or PostgreSQL): runs, snapshots, drills, measured RTO/RPO,
//!   the pack verification ledger and high-water marks; rebuildable from the repository.
//! - [`error`] — the library error type; [`exit`] — the process exit codes it maps to.
//! - [`direct`] — writes past the page cache (`O_DIRECT`) for packs and restored files.
//! - [`progress`] — progress reporting that the CLI renders (bars on a terminal, nothing else).
//! - [`demo`] — the `lifeboat demo` walkthrough on the embedded default.

pub mod catalog;
pub mod cli;
pub mod crypto;
pub mod demo;
pub mod direct;
pub mod drill;
pub mod error;
pub mod exit;
pub mod failpoint;
pub mod ids;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod repo;
pub mod report;
pub mod restore;
pub mod schedule;
pub mod secret;
pub mod source;
pub mod store;
pub mod sys;

pub use error::{Error, ExitCode, Result};
