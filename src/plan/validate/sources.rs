//! `[jobs.source]`: each source kind's keys, validated into a [`SourceSpec`]. The spec types
//! are [`crate::source`]'s; plan depends on source, never the reverse.

use super::{Seg, Validator};
use crate::plan::raw::SourceConfig;
use crate::source::db::DbConn;
use crate::source::mysql::MariadbSpec;
use crate::source::postgres::{DumpFormat, PostgresSpec};
use crate::source::spec::SourceSpec;
use crate::source::volume::block::BlockSpec;
use crate::source::volume::btrfs::BtrfsSpec;
use crate::source::volume::lvm::LvmSpec;
use crate::source::volume::zfs::ZfsSpec;

impl Validator<'_> {
    /// The `[jobs.source]` of job `i`; `None` when it has problems.
    pub(super) fn source(&mut self, i: usize, s: SourceConfig) -> Option<SourceSpec> {
        let at = |k: &'static str| [Seg::K("jobs"), Seg::I(i), Seg::K("source"), Seg::K(k)];
        let src_path = [Seg::K("jobs"), Seg::I(i), Seg::K("source")];
        let before = self.issues.len();
        let spec = match s {
            SourceConfig::Dir(d) => {
                if d.paths.is_empty() {
                    self.issue(
                        &at("paths"),
                        "no paths",
                        "list at least one directory, e.g. paths = [\"/etc\"]",
                    );
                }
                let paths = d.paths.iter().map(|p| self.resolve(p)).collect();
                SourceSpec::Dir { paths }
            }
            SourceConfig::Postgres(p) => {
                let password = self.secret(
                    &src_path,
                    p.password_file,
                    p.password_env,
                    p.password_credential,
                    p.password_command,
                    false,
                );
                if let Some(c) = p.compress {
                    if c > 9 {
                        self.issue(
                            &at("compress"),
                            format!("compress = {c} is out of range"),
                            "use 0 (default: let the repository compress) to 9",
                        );
                    }
                }
                self.db_name(&at("database"), &p.database);
                let format = p.format.unwrap_or_default();
                let jobs = p.jobs.unwrap_or(1);
                if jobs == 0 || jobs > 64 {
                    self.issue(
                        &at("jobs"),
                        format!("jobs = {jobs} is out of range"),
                        "use 1 to 64 parallel pg_dump workers",
                    );
                } else if jobs > 1 && format != DumpFormat::Directory {
                    self.issue(
                        &at("jobs"),
                        "parallel pg_dump needs the directory format",
                        "add format = \"directory\" (stages the dump in a temporary directory), or remove jobs",
                    );
                }
                SourceSpec::Postgres(PostgresSpec {
                    conn: DbConn {
                        host: p.host,
                        port: p.port,
                        socket: None,
                        user: p.user,
                        database: p.database,
                        password,
                    },
                    row_counts: p.row_counts.unwrap_or_default(),
                    globals: p.globals.unwrap_or(true),
                    compress: p.compress.unwrap_or(0),
                    bin_dir: p.bin_dir.map(|b| self.resolve(&b)),
                    format,
                    jobs,
                    spool_dir: p.spool_dir.map(|d| self.resolve(&d)),
                })
            }
            SourceConfig::Mariadb(m) => {
                let password = self.secret(
                    &src_path,
                    m.password_file,
                    m.password_env,
                    m.password_credential,
                    m.password_command,
                    false,
                );
                self.db_name(&at("database"), &m.database);
                SourceSpec::Mariadb(MariadbSpec {
                    conn: DbConn {
                        host: m.host,
                        port: m.port,
                        socket: m.socket.map(|s| self.resolve(&s)),
                        user: m.user,
                        database: m.database,
                        password,
                    },
                    row_counts: m.row_counts.unwrap_or_default(),
                    bin_dir: m.bin_dir.map(|b| self.resolve(&b)),
                    no_defaults: m.no_defaults.unwrap_or(false),
                })
            }
            SourceConfig::Btrfs(b) => {
                if !b.subvolume.is_absolute() {
                    self.issue(
                        &at("subvolume"),
                        "not an absolute path",
                        "give the subvolume's absolute path, e.g. \"/srv/data\"",
                    );
                }
                SourceSpec::Btrfs(BtrfsSpec {
                    subvolume: b.subvolume,
                    snapshot_dir: b.snapshot_dir,
                })
            }
            SourceConfig::Block(b) => SourceSpec::Block(BlockSpec {
                path: self.resolve(&b.path),
            }),
            SourceConfig::Lvm(l) => {
                if l.snapshot_size.trim().is_empty() {
                    self.issue(
                        &at("snapshot_size"),
                        "empty",
                        "give the copy-on-write space, e.g. \"2G\" or \"20%ORIGIN\"",
                    );
                }
                SourceSpec::Lvm(LvmSpec {
                    volume_group: l.volume_group,
                    logical_volume: l.logical_volume,
                    snapshot_size: l.snapshot_size,
                })
            }
            SourceConfig::Zfs(z) => {
                if z.dataset.contains('@') || z.dataset.is_empty() {
                    self.issue(
                        &at("dataset"),
                        format!("{:?} is not a dataset name", z.dataset),
                        "name the dataset without a snapshot, e.g. \"tank/home\"",
                    );
                }
                SourceSpec::Zfs(ZfsSpec { dataset: z.dataset })
            }
        };
        (self.issues.len() == before).then_some(spec)
    }

    fn db_name(&mut self, path: &[Seg], name: &str) {
        if name.is_empty() || name.contains('\0') || name.contains('\n') {
            self.issue(
                path,
                format!("{name:?} is not a database name"),
                "give the database's name",
            );
        }
    }
}
