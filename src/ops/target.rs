//! Where the data lives: one resolver from repeated `--repo` locations, a `--destinations`
//! file or a plan to a [`Target`] — the regions (destination name, the region name the
//! catalog records, location, store) and how to get the repository password — with
//! [`Target::open_for_write`] (one store, or every region behind a [`MultiStore`]) and
//! [`Target::open_for_read`] (one region, optionally falling back to the others).

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::plan::{DestinationSpec, Plan, SecretSpec};
use crate::repo::Repository;
use crate::store::multi::{Destination, Destinations, MultiStore};
use crate::store::{open_destination, DynStore};
use crate::{Error, Result};

/// The region a plain `--repo` location counts as in the catalog (plans name their regions).
pub const LOCAL_REGION: &str = "local";

/// One destination of a target.
#[derive(Debug, Clone)]
pub struct Region {
    /// The destination's own name (S3 label, `name = …`, or `local:<path>`).
    pub name: String,
    /// The name the catalog records this region under (`local` for a plan's local first
    /// destination, like plain `--repo` runs).
    pub catalog_region: String,
    /// Where it is, for people (no secrets).
    pub location: String,
    pub dest: Destination,
}

impl Region {
    pub fn store(&self) -> &DynStore {
        &self.dest.store
    }

    /// Whether `r` names this region (by catalog region, destination name or location).
    pub fn is(&self, r: &str) -> bool {
        self.catalog_region == r
            || self.name == r
            || self.location == r
            || format!("local:{}", self.location) == r
    }
}

/// Reads the repository password for a location; `confirm` asks twice (new repositories).
pub type PasswordFn = dyn Fn(&str, bool) -> Result<Zeroizing<String>> + Send + Sync;

#[derive(Clone)]
enum Password {
    /// The secret a plan names.
    Plan { plan: String, secret: SecretSpec },
    /// The caller's way (flags, environment, prompt).
    Given(Arc<PasswordFn>),
}

/// The resolved destinations of a command, and how to open them.
#[derive(Clone)]
pub struct Target {
    pub regions: Vec<Region>,
    /// How many regions must commit a write.
    pub min_regions: usize,
    /// Written through the multi-region fan-out even with one region (a destinations file
    /// or several locations were given).
    pub fanout: bool,
    /// The plan the target came from, if any.
    pub plan: Option<Arc<Plan>>,
    password: Password,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("regions", &self.regions)
            .field("min_regions", &self.min_regions)
            .field("fanout", &self.fanout)
            .finish()
    }
}

/// A repository opened for writing, and the fan-out behind it when there are several
/// regions (the backup's commit gate asks it which regions are complete).
pub struct Opened {
    pub repo: Repository,
    pub fanout: Option<Arc<MultiStore>>,
}

impl Target {
    /// The region name the catalog records this target's snapshots and packs under: a write
    /// that did not fan out (one `--repo`, a plan with one destination) is recorded as
    /// `local`, as `backup`, `verify`, `forget` and `prune` all do.
    pub fn recorded_region(&self, region: &Region) -> String {
        if self.is_multi() {
            region.catalog_region.clone()
        } else {
            LOCAL_REGION.to_string()
        }
    }

    /// A plan's destinations and password. `min_regions` overrides the plan's.
    pub fn from_plan(plan: Arc<Plan>, min_regions: Option<usize>) -> Result<Target> {
        let names = DestinationSpec::catalog_regions(&plan.destinations);
        let regions = plan
            .destinations
            .iter()
            .zip(names)
            .map(|(d, catalog_region)| {
                let dest = Destination::from_config(&d.0).map_err(|e| {
                    Error::Config(format!(
                        "plan {}: destination {}: {e}",
                        plan.name,
                        d.location()
                    ))
                })?;
                Ok(Region {
                    name: dest.name.clone(),
                    catalog_region,
                    location: d.location(),
                    dest,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Target {
            fanout: regions.len() > 1,
            min_regions: min_regions.unwrap_or(plan.min_regions),
            regions,
            password: Password::Plan {
                plan: plan.name.clone(),
                secret: plan.password.clone(),
            },
            plan: Some(plan),
        })
    }

    /// `--repo` locations (repeat for several regions) or a `--destinations` file.
    pub fn from_locations(
        repos: &[String],
        destinations: Option<&Path>,
        min_regions: Option<usize>,
        password: Arc<PasswordFn>,
    ) -> Result<Target> {
        let (dests, file_min, fanout) = match destinations {
            Some(file) => {
                if !repos.is_empty() {
                    return Err(Error::Usage(
                        "give either --destinations or --repo, not both".into(),
                    ));
                }
                let text = std::fs::read_to_string(file).map_err(|e| {
                    Error::Config(format!(
                        "cannot read destinations file {}: {e}",
                        file.display()
                    ))
                })?;
                let d = Destinations::parse(&text, &file.display().to_string())
                    .map_err(Error::Config)?;
                let dests = d
                    .destinations
                    .iter()
                    .map(|c| {
                        Destination::from_config(c).map_err(|e| {
                            Error::Config(format!("destinations file {}: {e}", file.display()))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                (dests, d.min_regions, true)
            }
            None if repos.is_empty() => {
                return Err(Error::Usage("no repository given: pass --repo LOCATION (repeat it for several regions) or --destinations FILE".into()));
            }
            None => (
                repos
                    .iter()
                    .map(|l| open_destination(l))
                    .collect::<Result<Vec<_>>>()?,
                None,
                repos.len() > 1,
            ),
        };
        let regions = dests
            .into_iter()
            .map(|dest| Region {
                name: dest.name.clone(),
                catalog_region: dest.name.clone(),
                location: dest.store.describe(),
                dest,
            })
            .collect();
        Ok(Target {
            regions,
            min_regions: min_regions.or(file_min).unwrap_or(1),
            fanout,
            plan: None,
            password: Password::Given(password),
        })
    }

    /// More than one region (or a destinations file): writes fan out, reads pick a region.
    pub fn is_multi(&self) -> bool {
        self.fanout
    }

    /// The destination names, comma-separated (for messages).
    pub fn region_names(&self) -> String {
        self.regions
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The repository password, from the plan or the caller.
    pub fn password(&self, location: &str, confirm: bool) -> Result<Zeroizing<String>> {
        match &self.password {
            Password::Plan { plan, secret } => secret.read().map_err(|e| {
                let m = format!("repository password of plan {plan}: {e}; {}", e.fix);
                if secret.fails_at_run_time() {
                    Error::Other(m)
                } else {
                    Error::Config(m)
                }
            }),
            Password::Given(f) => f(location, confirm),
        }
    }

    /// The store writes go to: the one region as it is, several behind a [`MultiStore`].
    pub fn store_for_write(&self) -> Result<(DynStore, Option<Arc<MultiStore>>)> {
        if self.regions.len() == 1 && !self.fanout {
            return Ok((self.regions[0].dest.store.clone(), None));
        }
        let dests = self.regions.iter().map(|r| r.dest.clone()).collect();
        let multi = Arc::new(MultiStore::new(dests, self.min_regions).map_err(Error::Config)?);
        Ok((multi.clone() as DynStore, Some(multi)))
    }

    /// Opens the repository for writing (backups, key changes).
    pub async fn open_for_write(&self) -> Result<Opened> {
        let (store, fanout) = self.store_for_write()?;
        Ok(Opened {
            repo: self.open_store(store).await?,
            fanout,
        })
    }

    /// The region `name` names (by catalog region, destination name or location).
    pub fn region(&self, name: &str) -> Result<&Region> {
        self.regions.iter().find(|r| r.is(name)).ok_or_else(|| {
            Error::Usage(format!(
                "no region named {name:?}; the regions are: {}",
                self.region_names()
            ))
        })
    }

    /// Opens one region's repository with the target's password.
    pub async fn open_region(&self, region: &Region) -> Result<Repository> {
        self.open_store(region.dest.store.clone()).await
    }

    /// Opens the repository in `store` with the target's password, refusing early (exit 10)
    /// before asking for a password the user cannot use.
    async fn open_store(&self, store: DynStore) -> Result<Repository> {
        crate::repo::read_config(&store).await?;
        let pw = self.password(&store.describe(), false)?;
        Repository::open(store, pw.as_bytes()).await
    }

    /// Opens the repository for reading: in region `region` when given (else all regions,
    /// first answer wins); with `allow_fallback`, a blob that fails to read or verify in the
    /// chosen region is read from the others.
    pub async fn open_for_read(
        &self,
        region: Option<&str>,
        allow_fallback: bool,
    ) -> Result<Repository> {
        let (primary, others): (DynStore, Vec<&Region>) = match region {
            Some(name) => {
                let r = self.region(name)?;
                (
                    r.dest.store.clone(),
                    self.regions.iter().filter(|o| o.name != r.name).collect(),
                )
            }
            None if self.regions.len() == 1 => (self.regions[0].dest.store.clone(), Vec::new()),
            None if allow_fallback => (
                self.regions[0].dest.store.clone(),
                self.regions[1..].iter().collect(),
            ),
            None => {
                let dests = self.regions.iter().map(|r| r.dest.clone()).collect();
                (
                    Arc::new(MultiStore::new(dests, 1).map_err(Error::Config)?) as DynStore,
                    Vec::new(),
                )
            }
        };
        let repo = self.open_store(primary).await?;
        Ok(if allow_fallback {
            repo.with_fallbacks(
                others
                    .into_iter()
                    .map(|r| (r.name.clone(), r.dest.store.clone()))
                    .collect(),
            )
        } else {
            repo
        })
    }
}
