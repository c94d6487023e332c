//! `[objectives]` service-level objectives for the backups themselves: `backups_on_time`
//! (a share such as "99%"), `drill_every` (a duration: every region passes a drill at least
//! that often) and `slo_window` (the window they are measured over, default 30 days).

use super::{Seg, Validator};
use crate::plan::model::{SloSpec, DEFAULT_SLO_WINDOW};
use crate::plan::raw::ObjectivesConfig;

/// "99%", "99.5 %", "0.99" → basis points (9900); `None` when it is not a share in (0, 100 %].
pub fn parse_share(s: &str) -> Option<u32> {
    let t = s.trim();
    let bp = match t.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().ok()? * 100.0,
        None => t.parse::<f64>().ok()? * 10_000.0,
    };
    (bp > 0.0 && bp <= 10_000.0 && bp.is_finite()).then_some(bp.round() as u32)
}

impl Validator<'_> {
    pub(super) fn slo(&mut self, o: &ObjectivesConfig) -> SloSpec {
        let backups_on_time_bp = o.backups_on_time.as_deref().and_then(|s| {
            let v = parse_share(s);
            if v.is_none() {
                self.issue(
                    &[Seg::K("objectives"), Seg::K("backups_on_time")],
                    format!("{s:?} is not a share above 0 and at most 100 %"),
                    "write a share such as \"99%\" or \"99.5%\"",
                );
            }
            v
        });
        let drill_every = o
            .drill_every
            .as_deref()
            .and_then(|s| self.duration(&[Seg::K("objectives"), Seg::K("drill_every")], s));
        let window = o
            .slo_window
            .as_deref()
            .and_then(|s| self.duration(&[Seg::K("objectives"), Seg::K("slo_window")], s))
            .unwrap_or(DEFAULT_SLO_WINDOW);
        SloSpec {
            backups_on_time_bp,
            drill_every,
            window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn shares() {
        assert_eq!(parse_share("99%"), Some(9900));
        assert_eq!(parse_share("99.5 %"), Some(9950));
        assert_eq!(parse_share("0.999"), Some(9990));
        assert_eq!(parse_share("100%"), Some(10_000));
        for bad in ["0%", "101%", "abc", "-5%", ""] {
            assert_eq!(parse_share(bad), None, "{bad}");
        }
    }
}
