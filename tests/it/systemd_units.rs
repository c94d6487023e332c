//! The shipped systemd units.
