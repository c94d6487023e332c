//! Sizes and durations for people: `1.5 GiB`, `850 ms`, `3.20 s`, `4m 10s`.

use std::time::Duration;

pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 120.0 {
        format!("{secs:.2} s")
    } else {
        humantime::format_duration(Duration::from_secs(secs.round() as u64)).to_string()
    }
}
