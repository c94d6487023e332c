//! `[[destinations]]` and `min_regions`: at least one destination, local paths resolved
//! against the plan file's directory, S3 settings checked by the store, distinct names, and
//! a `min_regions` between 1 and the number of destinations.

use super::{Seg, Validator};
use crate::plan::model::DestinationSpec;
use crate::plan::raw::{DestinationConfig, LocalConfig};

impl Validator<'_> {
    /// `[[destinations]]` and `min_regions` (default 1).
    pub(super) fn destinations(
        &mut self,
        raw: Vec<DestinationConfig>,
        min_regions: Option<usize>,
    ) -> (Vec<DestinationSpec>, usize) {
        let mut destinations = Vec::new();
        for (i, d) in raw.into_iter().enumerate() {
            match d {
                DestinationConfig::Local(l) => {
                    if l.path.as_os_str().is_empty() {
                        self.issue(
                            &[Seg::K("destinations"), Seg::I(i), Seg::K("path")],
                            "empty path",
                            "give the repository directory",
                        );
                    }
                    destinations.push(DestinationSpec(DestinationConfig::Local(LocalConfig {
                        name: l.name,
                        path: self.resolve(&l.path),
                    })));
                }
                DestinationConfig::S3(c) => {
                    if let Err(e) = c.validate() {
                        self.issue(
                            &[Seg::K("destinations"), Seg::I(i)],
                            e,
                            "see docs/plans.md for the keys of an s3 destination",
                        );
                    }
                    destinations.push(DestinationSpec(DestinationConfig::S3(c)));
                }
            }
        }
        if destinations.is_empty() {
            self.issue(
                &[Seg::K("destinations")],
                "no destination",
                "add a [[destinations]] table with type = \"local\" and path = \"/srv/lifeboat/repo\"",
            );
        }
        let min_regions = min_regions.unwrap_or(1);
        if min_regions == 0 || (min_regions > destinations.len() && !destinations.is_empty()) {
            self.issue(
                &[Seg::K("min_regions")],
                format!(
                    "{min_regions} is not between 1 and the {} destinations",
                    destinations.len()
                ),
                "set min_regions to how many destinations must commit each backup",
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, d) in destinations.iter().enumerate() {
            let name = crate::store::multi::Destination::from_config(&d.0)
                .map(|x| x.name)
                .unwrap_or_default();
            if !names.insert(name.clone()) {
                self.issue(
                    &[Seg::K("destinations"), Seg::I(i)],
                    format!("two destinations are named {name:?}"),
                    "give each destination a distinct `name`",
                );
            }
        }
        (destinations, min_regions)
    }
}
