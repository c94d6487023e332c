//! `forget` (apply the keep rules, optionally `--prune`) and `prune` (free unreferenced data).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::output::{bytes, print_json};
use super::Ctx;
use crate::error::ExitCode;
use crate::ops::forget::{ForgetReport, ForgetRequest};
use crate::ops::prune::{PruneRegion, PruneReport, PruneRequest};
use crate::repo::retention::Policy;
use crate::{Error, Result};

const FORGET_AFTER: &str = "\
Snapshots are grouped by plan job (ad-hoc backups: by host and paths) and each group is
counted on its own, newest first, with restic's rules. Calendar buckets (hour, day, ISO
week, month, year) are in the local time zone. Two rules of lifeboat's own always apply:
the newest snapshot whose drill passed (per job and region, from the catalog) is kept, and
so is any snapshot a running drill is restoring. A group is never emptied: forget refuses.
Snapshots dated more than 5 minutes after the store's current time are kept and do not use
up any count (forged or from a host with a broken clock; `verify` warns about them).

Nothing is removed without --confirm: by default forget is a dry run and says so (exit 0).
Retention that run-due applies from a plan's [retention] is confirmed by the plan.

Examples:
  lifeboat forget --plan plans/postgres.toml                # the plan's [retention], as a table
  lifeboat forget --repo /srv/repo --keep-daily 7 --keep-weekly 4 --prune --confirm
  lifeboat forget --repo /srv/repo --append-only --keep-within 30d --confirm";

/// What a command that would delete prints when it was not confirmed.
pub const DRY_RUN_NOTE: &str =
    "dry run (the default): nothing was removed; add --confirm to remove";

#[derive(Args, Debug)]
#[command(after_help = FORGET_AFTER)]
pub struct ForgetArgs {
    /// Use this plan's destinations, password and [retention] (flags override the rules)
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: only this job's snapshots
    #[arg(long, requires = "plan", value_name = "NAME")]
    pub job: Option<String>,
    /// Only this region (a destination name); default: every region
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Keep the newest N snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the newest N hours
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N days
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the newest N ISO weeks
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N months
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the newest N years
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot younger than DURATION, counted from the group's newest (with
    /// --append-only: from the store's current time) (e.g. 14d)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Show what would be kept and removed, and why; change nothing (the default without
    /// --confirm)
    #[arg(long, short = 'n', conflicts_with = "confirm")]
    pub dry_run: bool,
    /// Remove the snapshots the rules do not keep (and, with --prune, free their data).
    /// Without it forget only shows what it would do
    #[arg(long)]
    pub confirm: bool,
    /// The repository is append-only for its backup credentials (they cannot delete, but
    /// can add snapshots): keep-within counts from the store's current time, not from the
    /// newest snapshot, and count rules (--keep-last, --keep-daily, …) are refused. A plan
    /// says it with `[retention] append_only = true`
    #[arg(long)]
    pub append_only: bool,
    /// With --append-only (or a plan's append_only): apply the count rules too. Forged
    /// snapshots can then fill their counts and push real snapshots out
    #[arg(long)]
    pub allow_count_rules: bool,
    /// Remove snapshots even when the rules would remove every snapshot of a job or source
    /// (refused without it, exit 1)
    #[arg(long)]
    pub force: bool,
    /// Then free the data no snapshot needs any more (see `lifeboat prune`)
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOpts,
}

#[derive(Args, Debug, Clone)]
pub struct PruneOpts {
    /// Repack partly used packs until at most this share of the repository is unused after
    /// the prune (restic's definition: unused at most p/(1-p) of the used blob bytes)
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    pub max_unused: String,
    /// Also merge packs under 4/5 of the pack size whenever that makes fewer packs (by
    /// default only packs under 1/25 of it are merged, once there are ten of a kind: the
    /// tree pack and the partial data pack most backups leave)
    #[arg(long)]
    pub repack_small: bool,
    /// Delete condemned packs only once their prune plan is this old (0: in this run; a
    /// younger plan waits for a later prune)
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub grace: String,
}

const PRUNE_AFTER: &str = "\
Two phases. Phase 1 (beside running backups, under a shared lock) finds the packs no
snapshot needs and repacks partly used ones (the copies are read back and verified), and
stores a plan of the packs to delete. Phase 2 (under a short exclusive lock) deletes them,
except those a snapshot committed since phase 1 needs. A kill at any moment leaves every
snapshot restorable; the next prune finishes the job. Exit 11: phase 2 could not lock the
repository (a backup or drill is running), or lost its lock lease while deleting (the
process was stopped past it): the plan is kept for the next prune. Under the exclusive lock,
S3 multipart uploads left unfinished by killed writers and older than twice the lock lease
(LIFEBOAT_LOCK_LEASE_SECS, default 15 min) are aborted and counted.";

#[derive(Args, Debug)]
#[command(after_help = PRUNE_AFTER)]
pub struct PruneArgs {
    /// Use this plan's destinations and password
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Only this region (a destination name); default: every region
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Show what would be deleted and repacked; change nothing (the default without
    /// --confirm)
    #[arg(long, short = 'n', conflicts_with = "confirm")]
    pub dry_run: bool,
    /// Delete (and repack): without it prune only shows what it would free
    #[arg(long)]
    pub confirm: bool,
    #[command(flatten)]
    pub opts: PruneOpts,
}

fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| Error::Usage(format!("--max-unused {s:?}: give a percentage, e.g. 5%")))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(Error::Usage(format!(
            "--max-unused {s}: give a percentage from 0% to 100%"
        )));
    }
    Ok(v / 100.0)
}

fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| Error::Usage(format!("{flag} {s:?}: {e} (e.g. 30m, 14d, 1y)")))
}

impl PruneOpts {
    fn request(&self, dry_run: bool) -> Result<PruneRequest> {
        Ok(PruneRequest {
            max_unused: parse_percent(&self.max_unused)?,
            repack_small: self.repack_small,
            grace: parse_duration("--grace", &self.grace)?,
            dry_run,
        })
    }
}

/// `lifeboat forget`.
pub async fn forget(ctx: &Ctx, a: ForgetArgs) -> Result<ExitCode> {
    let flags = Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a
            .keep_within
            .as_deref()
            .map(|s| parse_duration("--keep-within", s))
            .transpose()?,
        keep_tags: a.keep_tags.clone(),
    };
    let given = flags != Policy::default();
    let target = ctx.target(a.plan.as_deref(), true)?;
    let dry_run = a.dry_run || !a.confirm;
    let req = ForgetRequest {
        job: a.job,
        policy: given.then_some(flags),
        region: a.region,
        dry_run,
        force: a.force,
        append_only: a.append_only.then_some(true),
        allow_count_rules: a.allow_count_rules,
        prune: a.prune.then(|| a.prune_opts.request(dry_run)).transpose()?,
    };
    let report = crate::ops::forget::forget(&ctx.env(), &target, req).await?;
    print_forget(ctx, &report);
    if dry_run && !ctx.global.json && !ctx.global.quiet {
        println!("{DRY_RUN_NOTE}");
    }
    Ok(report.exit_code())
}

fn print_forget(ctx: &Ctx, r: &ForgetReport) {
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "dry_run": r.dry_run, "note": r.dry_run.then_some(DRY_RUN_NOTE), "policy": r.policy, "append_only": r.append_only, "regions": r.regions}),
        );
        return;
    }
    if ctx.global.quiet {
        return;
    }
    let multi = r.regions.len() > 1;
    if r.append_only {
        println!("append-only repository: keep-within counts back from the store's current time");
    }
    for reg in &r.regions {
        if let Some(e) = &reg.error {
            println!("region {}: NOT HANDLED: {e}", reg.name);
            continue;
        }
        for g in &reg.groups {
            let title = match (&g.plan, &g.job) {
                (Some(p), Some(j)) => format!("plan {p} job {j}"),
                _ => format!(
                    "host {} paths {}",
                    g.host.as_deref().unwrap_or("-"),
                    g.paths.join(" ")
                ),
            };
            if multi {
                println!("region {}: {title}", reg.name);
            } else {
                println!("{title}");
            }
            println!(
                "  {:<10} {:<20} {:<7} reasons",
                "snapshot", "time", "action"
            );
            for s in &g.snapshots {
                let reasons: Vec<String> = s.reasons.iter().map(|x| x.to_string()).collect();
                println!(
                    "  {:<10} {:<20} {:<7} {}",
                    s.id.short(),
                    s.time
                        .with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S"),
                    if s.keep { "keep" } else { "remove" },
                    reasons.join(", ")
                );
            }
        }
        let verb = if r.dry_run { "would remove" } else { "removed" };
        println!(
            "{}kept {} snapshots, {verb} {}",
            if multi {
                format!("region {}: ", reg.name)
            } else {
                String::new()
            },
            reg.kept,
            reg.removed
        );
        if let Some(p) = &reg.prune {
            print_prune_region(p, r.dry_run, multi);
        }
        if let Some(l) = &reg.object_lock {
            let pre = if multi {
                format!("region {}: ", reg.name)
            } else {
                String::new()
            };
            print_lock(l, &pre);
        }
    }
}

/// `lifeboat prune`.
pub async fn prune(ctx: &Ctx, a: PruneArgs) -> Result<ExitCode> {
    let target = ctx.target(a.plan.as_deref(), true)?;
    let req = a.opts.request(a.dry_run || !a.confirm)?;
    let report: PruneReport =
        crate::ops::prune::prune(&ctx.env(), &target, a.region.as_deref(), req).await?;
    if ctx.global.json {
        print_json(
            &json!({"message_type": "summary", "dry_run": report.dry_run, "note": report.dry_run.then_some(DRY_RUN_NOTE), "freed_bytes": report.freed_bytes(), "regions": report.regions}),
        );
    } else if !ctx.global.quiet {
        let multi = report.regions.len() > 1;
        for r in &report.regions {
            print_prune_region(r, report.dry_run, multi);
        }
    }
    if report.dry_run && !ctx.global.json && !ctx.global.quiet {
        println!("{DRY_RUN_NOTE}");
    }
    Ok(report.exit_code())
}

fn print_prune_region(r: &PruneRegion, dry_run: bool, multi: bool) {
    let pre = if multi {
        format!("region {}: ", r.name)
    } else {
        String::new()
    };
    if let Some(e) = &r.error {
        println!("{pre}NOT PRUNED: {e}");
        return;
    }
    if let Some(m) = &r.mark {
        println!(
            "{pre}{} snapshots, {} packs ({}); unused: {} packs ({}); to repack: {} packs ({}); unused bytes left in partly used packs: {}",
            m.snapshots,
            m.packs,
            bytes(m.bytes),
            m.unused_packs,
            bytes(m.unused_bytes),
            m.repacked_packs,
            bytes(m.repacked_bytes),
            bytes(m.unused_bytes_kept)
        );
        if m.small_packs > 0 {
            println!(
                "{pre}small packs to merge: {} ({}; counted in the packs to repack)",
                m.small_packs,
                bytes(m.small_bytes)
            );
        }
        if m.new_packs > 0 {
            println!(
                "{pre}repacked {} blobs into {} new packs ({}), each read back and verified",
                m.repacked_blobs,
                m.new_packs,
                bytes(m.new_bytes)
            );
        }
        if m.missing_blobs > 0 {
            println!(
                "{pre}warning: {} blobs that snapshots need are in no index; run `lifeboat verify`",
                m.missing_blobs
            );
        }
        if dry_run {
            println!(
                "{pre}would delete {} packs ({}) (dry run: nothing changed)",
                m.condemned_packs,
                bytes(m.condemned_bytes)
            );
        }
    }
    if let Some(s) = &r.sweep {
        println!(
            "{pre}deleted {} packs, freed {}{}{}",
            s.deleted_packs,
            bytes(s.freed_bytes),
            if s.rescued_packs > 0 {
                format!(
                    "; kept {} condemned packs that snapshots made since phase 1 need",
                    s.rescued_packs
                )
            } else {
                String::new()
            },
            if s.plans_waiting > 0 {
                format!(
                    "; {} prune plans wait for their grace period",
                    s.plans_waiting
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(m) = r.mark.as_ref().filter(|m| m.locked_packs > 0) {
        println!(
            "{pre}skipped {} unused or partly used packs ({}) still under Object Lock retention{}: kept, a later prune frees them",
            m.locked_packs,
            bytes(m.locked_bytes),
            lapse(m.locked_lapse)
        );
    }
    if let Some(s) = r.sweep.as_ref().filter(|s| s.locked_packs > 0) {
        println!(
            "{pre}{} packs ({}) are still under Object Lock retention{}: kept, will retry (a later prune deletes them once it lapses)",
            s.locked_packs,
            bytes(s.locked_bytes),
            lapse(s.locked_lapse)
        );
    }
    if let Some(m) = &r.multipart {
        print_multipart(&pre, m, dry_run);
    }
    if let Some(d) = &r.deferred {
        println!("{pre}packs not deleted yet: the repository is in use ({d}); the next prune deletes them");
    }
    if let Some(l) = &r.object_lock {
        print_lock(l, &pre);
    }
}

fn lapse(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| {
        format!(
            " (the first lapses {})",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    })
    .unwrap_or_default()
}

fn print_lock(l: &crate::repo::object_lock::LockReport, pre: &str) {
    println!(
        "{pre}object lock: {} objects the snapshots need; extended {}{}; read {}; all locked until at least {}",
        l.objects,
        l.extended,
        l.extended_to
            .map(|t| format!(" to {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            .unwrap_or_default(),
        l.read,
        l.earliest_until
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into())
    );
}

fn print_multipart(pre: &str, m: &crate::repo::multipart_gc::MultipartReport, dry_run: bool) {
    if m.aborted > 0 {
        println!(
            "{pre}{} {} orphaned multipart uploads (started over {} ago by writers that did not finish)",
            if dry_run { "would abort" } else { "aborted" },
            m.aborted,
            crate::sys::human::duration(m.abort_age_secs as f64)
        );
    }
    if m.kept > 0 {
        println!(
            "{pre}{} multipart uploads in progress or too recent to abort; a later prune aborts them if they are orphaned",
            m.kept
        );
    }
    if let Some(e) = &m.error {
        eprintln!("warning: {pre}{e}; a later prune retries (a bucket lifecycle rule AbortIncompleteMultipartUpload also cleans them up)");
    }
}
