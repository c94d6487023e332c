//! Metrics: what the catalog and run-due's state file say, in the Prometheus/OpenMetrics text
//! exposition format (the `prometheus-client` crate encodes it). Two ways out:
//! [`write_textfile`] — a file for node_exporter's textfile collector, replaced atomically
//! (run-due writes it after every run) — and [`serve`] (`lifeboat metrics serve --listen
//! ADDR`), which renders afresh from the catalog on every scrape of `/metrics`. Both give
//! the Prometheus text format ([`prometheus_text`] of the crate's OpenMetrics output).
//!
//! Names follow Prometheus conventions (base units, `_seconds`, `_bytes`, `_total`); labels
//! are `plan`, `lifeboat_job`, `region` (and `phase`, `objective`, `task`, `kind` where they
//! apply) — not `job`, which Prometheus sets to the scrape job and would rename.
//! The list is in `docs/operations.md`; `monitoring/` holds alert rules and a dashboard
//! written against exactly these names. No metric carries a secret: names, times, sizes
//! and codes only.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::record::open_catalog;
use super::run_due::RunDueState;
use super::status::{self, StatusRequest};
use super::Env;
use crate::sys::clock::Clock;
use crate::{Error, Result};

/// What the metrics cover.
#[derive(Clone)]
pub struct MetricsRequest {
    /// Plan files (a file or a directory): their objectives, drill intervals and verify
    /// cycles are the targets. Without, the targets the drills recorded.
    pub plan: Option<PathBuf>,
    /// Where run-due keeps its state file (task outcomes).
    pub state_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
}

type Labels = Vec<(String, String)>;
type G = Family<Labels, Gauge<f64, AtomicU64>>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Registers gauge families by name, in the order first used.
struct Gauges {
    families: Vec<(&'static str, &'static str, G)>,
}

impl Gauges {
    fn set(&mut self, name: &'static str, help: &'static str, l: Labels, v: f64) {
        let fam = match self.families.iter().find(|(n, _, _)| *n == name) {
            Some((_, _, f)) => f.clone(),
            None => {
                let f = G::default();
                self.families.push((name, help, f.clone()));
                f
            }
        };
        fam.get_or_create(&l).set(v);
    }
}

/// Renders every metric as OpenMetrics text (what `/metrics` serves and the textfile holds).
pub async fn render(env: &Env, req: &MetricsRequest) -> Result<String> {
    let mut g = Gauges {
        families: Vec::new(),
    };
    let mut registry = Registry::default();
    let runs_total = Family::<Labels, Counter>::default();
    let failures_total = Family::<Labels, Counter>::default();

    // run-due's own record: present even when the catalog is down.
    let state = RunDueState::load(&req.state_dir).unwrap_or_default();
    if let Some(t) = state.last_tick {
        g.set(
            "lifeboat_run_due_last_tick_timestamp_seconds",
            "When run-due last finished a tick (absent or old: the timer is not running)",
            Vec::new(),
            ts(t),
        );
    }
    for (key, t) in &state.tasks {
        let l = labels(&[
            ("plan", &t.plan),
            ("task", key),
            ("kind", &t.kind),
            ("subject", &t.subject),
        ]);
        g.set(
            "lifeboat_run_due_task_last_run_timestamp_seconds",
            "When run-due last started this task",
            l.clone(),
            ts(t.started),
        );
        g.set(
            "lifeboat_run_due_task_last_exit_code",
            "The exit code of the task's last run (0: success; see the exit-code table)",
            l.clone(),
            f64::from(t.exit_code),
        );
        g.set(
            "lifeboat_run_due_task_last_duration_seconds",
            "How long the task's last run took",
            l.clone(),
            t.duration_secs,
        );
        runs_total.get_or_create(&l).inc_by(t.runs);
        failures_total.get_or_create(&l).inc_by(t.failures);
    }

    let status_req = StatusRequest {
        region: None,
        plan: req.plan.as_ref().map(|p| p.display().to_string()),
        job: None,
        cycle: std::time::Duration::from_secs(30 * 86_400),
        clock: req.clock.clone(),
    };
    let catalog_up = match status::status(env, None, status_req).await {
        Ok(r) => {
            catalog_metrics(env, req, &r, &mut g).await?;
            1.0
        }
        Err(e) => {
            env.warn(format!("metrics: the catalog cannot be read ({e}); only run-due's own metrics are exported"));
            0.0
        }
    };
    g.set(
        "lifeboat_catalog_up",
        "1 when the catalog could be read for these metrics",
        Vec::new(),
        catalog_up,
    );

    for (name, help, fam) in g.families {
        registry.register(name, help, fam);
    }
    registry.register(
        "lifeboat_run_due_task_runs",
        "Runs of this task by run-due",
        runs_total,
    );
    registry.register(
        "lifeboat_run_due_task_failures",
        "Runs of this task that did not exit 0",
        failures_total,
    );
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| Error::Other(format!("encoding metrics: {e}")))?;
    Ok(out)
}

async fn catalog_metrics(
    env: &Env,
    req: &MetricsRequest,
    r: &status::StatusReport,
    g: &mut Gauges,
) -> Result<()> {
    let plans = match &req.plan {
        Some(p) => super::plans::load_plans(p)?,
        None => Vec::new(),
    };
    let cat = open_catalog(env).await?.with_clock(req.clock.clone());
    let names: Vec<&str> = plans.iter().map(|(_, p)| p.name.as_str()).collect();
    let runs: Vec<_> = cat
        .last_backup_runs("")
        .await?
        .into_iter()
        .filter(|r| names.is_empty() || names.contains(&r.plan.as_str()))
        .collect();
    let mut repo_plan: HashMap<String, String> = HashMap::new();
    for j in &r.status.jobs {
        repo_plan
            .entry(j.repo_id.to_hex())
            .or_insert_with(|| j.plan.clone());
        let l = labels(&[
            ("plan", &j.plan),
            ("lifeboat_job", &j.job),
            ("region", &j.region),
        ]);
        if let Some(s) = &j.newest_snapshot {
            g.set(
                "lifeboat_backup_newest_snapshot_timestamp_seconds",
                "Consistency time of the newest snapshot",
                l.clone(),
                ts(s.consistency_time),
            );
            g.set(
                "lifeboat_rpo_seconds",
                "Now minus the consistency time of the newest snapshot",
                l.clone(),
                s.age_secs,
            );
        }
        if let Some(s) = &j.newest_verified_snapshot {
            g.set(
                "lifeboat_verified_rpo_seconds",
                "Now minus the consistency time of the newest snapshot a drill proved restorable",
                l.clone(),
                s.age_secs,
            );
        }
        if let Some(t) = j.rpo_target_secs {
            g.set(
                "lifeboat_rpo_target_seconds",
                "The RPO objective",
                l.clone(),
                t,
            );
        }
        if let Some(d) = &j.last_drill {
            g.set(
                "lifeboat_drill_last_timestamp_seconds",
                "When the last drill finished",
                l.clone(),
                ts(d.finished),
            );
            g.set(
                "lifeboat_drill_last_success",
                "1 when the last drill passed its checks and objectives",
                l.clone(),
                f64::from(u8::from(d.result == crate::catalog::DrillResult::Passed)),
            );
            if let Some(rto) = d.rto_secs {
                g.set(
                    "lifeboat_drill_last_rto_seconds",
                    "Measured RTO of the last drill",
                    l.clone(),
                    rto,
                );
            }
            if let Some(t) = d.rto_target_secs {
                g.set(
                    "lifeboat_rto_target_seconds",
                    "The RTO objective",
                    l.clone(),
                    t,
                );
            }
            if let Some(rec) = cat.drill(&d.drill_id).await? {
                for p in &rec.phases {
                    let mut pl = l.clone();
                    pl.push(("phase".into(), p.phase.clone()));
                    g.set(
                        "lifeboat_drill_last_phase_seconds",
                        "Time of each phase of the last drill",
                        pl,
                        p.secs,
                    );
                }
            }
        }
    }
    // Every job row held in several regions gets the gauge, 0 or 1, so the alert resolves.
    let degraded = &r.degraded;
    for j in &r.status.jobs {
        let several = r
            .status
            .jobs
            .iter()
            .filter(|o| o.repo_id == j.repo_id && o.plan == j.plan && o.job == j.job)
            .count()
            > 1;
        if !several {
            continue;
        }
        let d = degraded
            .iter()
            .find(|d| d.plan == j.plan && d.job == j.job && d.region == j.region);
        let l = labels(&[
            ("plan", &j.plan),
            ("lifeboat_job", &j.job),
            ("region", &j.region),
        ]);
        g.set(
            "lifeboat_region_degraded",
            "1 when this region's newest snapshot of the job is older than another region's (its backups did not reach it)",
            l.clone(),
            f64::from(u8::from(d.is_some())),
        );
        if let Some(b) = d.and_then(|d| d.behind_secs) {
            g.set(
                "lifeboat_region_behind_seconds",
                "How much older this region's newest snapshot is than the job's newest in any region",
                l,
                b,
            );
        }
    }
    for run in &runs {
        let l = labels(&[
            ("plan", &run.plan),
            ("lifeboat_job", &run.job),
            ("region", &run.region),
        ]);
        g.set(
            "lifeboat_backup_last_run_timestamp_seconds",
            "When the last backup run finished",
            l.clone(),
            ts(run.finished),
        );
        g.set(
            "lifeboat_backup_last_success",
            "1 when the last backup run committed a snapshot to this region without errors",
            l.clone(),
            f64::from(u8::from(run.status == crate::catalog::RunStatus::Ok)),
        );
        g.set(
            "lifeboat_backup_last_duration_seconds",
            "Duration of the last backup run",
            l.clone(),
            (run.finished - run.started).num_milliseconds() as f64 / 1000.0,
        );
        g.set(
            "lifeboat_backup_last_read_bytes",
            "Bytes the last backup run read from its source",
            l.clone(),
            run.bytes_processed as f64,
        );
        g.set(
            "lifeboat_backup_last_added_bytes",
            "New bytes (before compression) the last backup run added",
            l.clone(),
            run.bytes_added as f64,
        );
        g.set(
            "lifeboat_backup_last_stored_bytes",
            "Bytes the last backup run stored in this region",
            l.clone(),
            run.bytes_stored as f64,
        );
    }
    for c in &r.status.coverage {
        let plan = repo_plan
            .get(&c.repo_id.to_hex())
            .cloned()
            .unwrap_or_default();
        let l = labels(&[
            ("plan", &plan),
            ("repository", &c.repo_id.short()),
            ("region", &c.region),
        ]);
        g.set(
            "lifeboat_verify_coverage_ratio",
            "Share of the region's bytes verified within the cycle (0..1)",
            l.clone(),
            c.percent / 100.0,
        );
        g.set(
            "lifeboat_verify_cycle_seconds",
            "The verification cycle coverage is measured over",
            l.clone(),
            c.cycle_secs,
        );
        g.set(
            "lifeboat_verify_oldest_unverified_age_seconds",
            "How long the least recently verified pack has gone unverified (0: all covered)",
            l.clone(),
            c.oldest_unverified_age_secs.unwrap_or(0.0),
        );
        g.set(
            "lifeboat_verify_damaged_packs",
            "Packs whose last read found damage",
            l.clone(),
            c.damaged as f64,
        );
        g.set(
            "lifeboat_repository_size_bytes",
            "Bytes of packs in the region",
            l.clone(),
            c.bytes as f64,
        );
    }
    for (_, p) in &plans {
        let regions = crate::plan::DestinationSpec::catalog_regions(&p.destinations);
        if let Some(iv) = p.drill_interval() {
            g.set(
                "lifeboat_drill_interval_seconds",
                "How often each region must be drilled",
                labels(&[("plan", &p.name)]),
                iv.as_secs_f64(),
            );
        }
        for region in &regions {
            let last = r
                .status
                .jobs
                .iter()
                .filter(|j| j.plan == p.name && &j.region == region)
                .filter_map(|j| j.last_drill.as_ref().map(|d| d.finished))
                .max();
            if let Some(t) = last {
                g.set(
                    "lifeboat_region_last_drill_timestamp_seconds",
                    "When any job of the plan was last drilled from this region",
                    labels(&[("plan", &p.name), ("region", region)]),
                    ts(t),
                );
            }
        }
    }
    // SLOs and RTO trends: status's figures (the period report's functions), per plan with SLOs.
    for p in &r.slos {
        for s in &p.slos {
            let l = labels(&[("plan", &p.plan), ("slo", &s.slo)]);
            g.set(
                "lifeboat_slo_target_ratio",
                "The share of events the SLO requires to be good",
                l.clone(),
                s.target_share,
            );
            if let Some(v) = s.measured_share {
                g.set(
                    "lifeboat_slo_share_ratio",
                    "The share of the SLO's events that were good over its window",
                    l.clone(),
                    v,
                );
            }
            if let Some(v) = s.budget_left {
                g.set(
                    "lifeboat_slo_error_budget_remaining_ratio",
                    "Share of the SLO's error budget left over its window (below 0: overspent)",
                    l.clone(),
                    v,
                );
            }
            if let Some(v) = s.burn_rate {
                g.set(
                    "lifeboat_slo_burn_rate",
                    "Bad share over allowed bad share (above 1: the budget runs out before the window ends)",
                    l,
                    v,
                );
            }
        }
        for t in &p.rto_trends {
            let l = labels(&[
                ("plan", &p.plan),
                ("lifeboat_job", &t.job),
                ("region", &t.region),
            ]);
            g.set(
                "lifeboat_rto_trend_seconds_per_day",
                "RTO growth per day (Theil-Sen fit over the drills)",
                l.clone(),
                t.trend.secs_per_day,
            );
            if let Some(b) = t.trend.breach {
                g.set(
                    "lifeboat_rto_breach_projected_timestamp_seconds",
                    "When the fitted RTO trend reaches the RTO target",
                    l,
                    ts(b),
                );
            }
        }
    }
    // Snapshot anomalies (T16), from the catalog's snapshot rows by status (no repository is
    // opened on a scrape), each kind raised to what the last `verify` of the region on this
    // host found (it also sees snapshots the catalog has not recorded): 0 per kind when there
    // are none, so an alert on `> 0` also has a series to resolve.
    let mut anomalies: BTreeMap<(String, String), BTreeMap<super::anomaly::AnomalyKind, u64>> =
        BTreeMap::new();
    for ra in &r.anomalies {
        let plan = ra.plan.clone().unwrap_or_default();
        let e = anomalies.entry((plan, ra.region.clone())).or_default();
        for (kind, n) in super::anomaly::counts(&ra.anomalies) {
            *e.entry(kind).or_default() += n as u64;
        }
    }
    match super::anomaly::load_verified(&req.state_dir) {
        Ok(verified) => {
            for v in verified {
                if !plans.is_empty() && !names.contains(&v.plan.as_str()) {
                    continue;
                }
                let e = anomalies.entry((v.plan, v.region)).or_default();
                for kind in super::anomaly::AnomalyKind::ALL {
                    let n = v.counts.get(&kind).copied().unwrap_or(0);
                    let c = e.entry(kind).or_default();
                    *c = (*c).max(n);
                }
            }
        }
        Err(e) => env.warn(format!("metrics: {e}")),
    }
    for ((plan, region), counts) in &anomalies {
        for (kind, n) in counts {
            g.set(
                "lifeboat_snapshot_anomalies",
                "Snapshots in the region that look forged or broken: dated in the future, from a host new to the job, or a size collapse (`lifeboat verify` names them)",
                labels(&[("plan", plan), ("region", region), ("kind", kind.as_str())]),
                *n as f64,
            );
        }
    }
    let kinds = [
        "rpo",
        "verified_rpo",
        "rto",
        "drill_failed",
        "drill_interval",
        "coverage",
    ];
    let mut per_plan: HashMap<(String, &str), f64> = HashMap::new();
    for p in r
        .status
        .jobs
        .iter()
        .map(|j| j.plan.clone())
        .chain(plans.iter().map(|(_, p)| p.name.clone()))
    {
        for k in kinds {
            per_plan.entry((p.clone(), k)).or_insert(0.0);
        }
    }
    for m in &r.misses {
        *per_plan.entry((m.plan.clone(), m.objective)).or_insert(0.0) += 1.0;
    }
    let mut keys: Vec<_> = per_plan.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    for ((plan, objective), n) in keys {
        g.set(
            "lifeboat_objectives_missed",
            "How many jobs/regions of the plan miss this objective now (what `status --check` exits 17 on)",
            labels(&[("plan", &plan), ("objective", objective)]),
            n,
        );
    }
    cat.close().await;
    Ok(())
}

/// Renders the metrics and replaces `path` atomically (node_exporter's textfile collector
/// reads `*.prom` files; it must never see half a file).
pub async fn write_textfile(env: &Env, req: &MetricsRequest, path: &Path) -> Result<()> {
    let text = prometheus_text(&render(env, req).await?);
    crate::schedule::write_atomic(path, text.as_bytes())
}

/// OpenMetrics text as the Prometheus 0.0.4 text format node_exporter's textfile collector
/// parses: a counter's `# HELP`/`# TYPE` name the sample name (`…_total`) and there is no
/// `# EOF`. Everything else is the same in both formats.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in openmetrics.lines() {
        if let Some(name) = l
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| l.strip_prefix(p).map(|r| (p, r)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}\n"));
                } else {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Serves `GET /metrics` on `listen` until `env.cancel` fires, rendering afresh from the
/// catalog on every scrape. `bound` hears the address actually bound (port 0 picks one).
pub async fn serve(
    env: &Env,
    req: MetricsRequest,
    listen: SocketAddr,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::Other(format!(
            "metrics serve cannot listen on {listen}: {e}; pick a free address with --listen"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Other(format!("metrics serve: {e}")))?;
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    // Scrape-time warnings (catalog down) are not the serving process's events to print.
    let quiet = Env {
        observer: Arc::new(super::Collect::default()),
        ..env.clone()
    };
    let shared = Arc::new((quiet, req));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => a.map_err(|e| Error::Other(format!("metrics serve: accept: {e}")))?,
            _ = tick.tick() => {
                if env.cancel.is_cancelled() {
                    return Ok(());
                }
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let resp = if r.uri().path() != "/metrics" {
                        hyper::Response::builder().status(404).body(Full::new(
                            bytes::Bytes::from_static(b"lifeboat serves /metrics\n"),
                        ))
                    } else {
                        match render(&shared.0, &shared.1).await {
                            // The same text as the textfile: every Prometheus parses it.
                            Ok(text) => hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(bytes::Bytes::from(prometheus_text(&text)))),
                            Err(e) => hyper::Response::builder()
                                .status(500)
                                .body(Full::new(bytes::Bytes::from(format!("{e}\n")))),
                        }
                    };
                    Ok::<_, std::convert::Infallible>(resp.expect("response"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
