//! `[objectives]`: the documented RPO and RTO, each a positive duration.

use super::{Seg, Validator};
use crate::plan::model::Objectives;
use crate::plan::raw::ObjectivesConfig;

impl Validator<'_> {
    /// `[objectives]`: `rpo` and `rto`.
    pub(super) fn objectives(&mut self, o: ObjectivesConfig) -> Objectives {
        Objectives {
            rpo: o
                .rpo
                .as_deref()
                .and_then(|s| self.duration(&[Seg::K("objectives"), Seg::K("rpo")], s)),
            rto: o
                .rto
                .as_deref()
                .and_then(|s| self.duration(&[Seg::K("objectives"), Seg::K("rto")], s)),
            slo: self.slo(&o),
        }
    }
}
