//! What a job backs up, as a plan describes it: [`SourceSpec`], one variant per source kind
//! with that kind's validated settings, and [`SourceSpec::build`], which turns it into a
//! running [`Source`] wrapped in the job's hooks. Plans validate their `[jobs.source]`
//! tables into these values; this module knows nothing about plan files.

use std::path::PathBuf;

use super::hooks::{Hooked, HooksSpec};
use super::mysql::MariadbSpec;
use super::postgres::PostgresSpec;
use super::volume::block::BlockSpec;
use super::volume::btrfs::BtrfsSpec;
use super::volume::lvm::LvmSpec;
use super::volume::zfs::ZfsSpec;
use super::{dir, mysql, postgres, volume, Source};
use crate::Result;

/// A job's validated source: one variant per kind, holding that kind's own spec.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Dir { paths: Vec<PathBuf> },
    Postgres(PostgresSpec),
    Mariadb(MariadbSpec),
    Btrfs(BtrfsSpec),
    Block(BlockSpec),
    Lvm(LvmSpec),
    Zfs(ZfsSpec),
}

impl SourceSpec {
    /// The kind's name: `dir`, `postgres`, `mariadb`, `btrfs`, `block`, `lvm` or `zfs`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Dir { .. } => "dir",
            SourceSpec::Postgres(_) => "postgres",
            SourceSpec::Mariadb(_) => "mariadb",
            SourceSpec::Btrfs(_) => "btrfs",
            SourceSpec::Block(_) => "block",
            SourceSpec::Lvm(_) => "lvm",
            SourceSpec::Zfs(_) => "zfs",
        }
    }

    /// Builds the source for job `job`, wrapped in its hooks. Database passwords are read
    /// here, so a missing secret fails before anything starts.
    pub fn build(&self, job: &str, hooks: &HooksSpec) -> Result<Box<dyn Source>> {
        let inner: Box<dyn Source> = match self {
            SourceSpec::Dir { paths } => Box::new(dir::DirSource::new(paths.clone())?),
            SourceSpec::Postgres(s) => Box::new(postgres::PostgresSource::new(s.clone(), job)?),
            SourceSpec::Mariadb(s) => Box::new(mysql::MariadbSource::new(s.clone(), job)?),
            SourceSpec::Btrfs(s) => Box::new(volume::btrfs::BtrfsSource::new(s.clone(), job)),
            SourceSpec::Block(s) => Box::new(volume::block::BlockSource::new(s.clone(), job)),
            SourceSpec::Lvm(s) => Box::new(volume::lvm::LvmSource::new(s.clone(), job)),
            SourceSpec::Zfs(s) => Box::new(volume::zfs::ZfsSource::new(s.clone(), job)),
        };
        if hooks.pre.is_none() && hooks.post.is_none() {
            return Ok(inner);
        }
        Ok(Box::new(Hooked {
            inner,
            hooks: hooks.clone(),
            job: job.to_string(),
            pre_done: false,
        }))
    }
}
