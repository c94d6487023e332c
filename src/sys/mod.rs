//! Neutral helpers that every stage may use and that know nothing of backups: cooperative
//! cancellation ([`cancel`]), where "now" comes from ([`clock`]), who and where we are
//! ([`host`]), sizes and durations for people ([`human`]), and child processes with tool lookup and liveness checks ([`process`]).
//!
//! Nothing here imports another lifeboat module except the error type.

pub mod cancel;
pub mod clock;
pub mod host;
pub mod human;
pub mod process;

pub use cancel::Cancel;
pub use clock::{Clock, ManualClock, SystemClock};
