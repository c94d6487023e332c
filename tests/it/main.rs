//! The integration suite, as one test binary: one link instead of sixteen keeps builds fast and
//! small on CI machines. Each module is one area; `support` is the shared harness.

#[allow(dead_code)]
mod support;

mod append_only;
mod catalog;
mod clock_skew;
mod core_cli;
mod drill_environments;
mod drill_truth;
mod drills;
mod environments;
mod examples;
mod faults;
mod faults_local;
mod faults_s3;
mod listings;
mod mariadb;
mod monitoring;
mod notify;
mod ops;
mod plan_regions;
mod plans;
mod postgres;
mod region_down;
mod reliability;
mod reports;
mod retention;
mod roundtrip_prop;
mod run_due;
mod s3_regions;
mod secret_sources;
mod secrets;
mod sets;
mod source_failures;
mod store_conformance;
mod systemd_units;
mod volumes;
mod worm;
