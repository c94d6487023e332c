//! `lifeboat metrics`: the catalog and run-due's outcomes as Prometheus metrics — `write`
//! (to stdout or a textfile-collector file, replaced atomically) and `serve --listen ADDR`
//! (`GET /metrics`, rendered afresh on every scrape).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::Ctx;
use crate::error::ExitCode;
use crate::ops::metrics::{self, MetricsRequest};
use crate::sys::clock::SystemClock;
use crate::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum MetricsCommand {
    /// Print the metrics once, or write them to --textfile atomically
    Write(WriteArgs),
    /// Serve the metrics over HTTP at /metrics for Prometheus to scrape
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct Common {
    /// Plan file or directory: its objectives, drill interval and verify cycle are the
    /// targets (without: the targets the drills recorded)
    #[arg(long, value_name = "FILE|DIR")]
    pub plan: Option<PathBuf>,
    /// Where run-due keeps its state (default: beside the default catalog)
    #[arg(long, value_name = "DIR", env = "LIFEBOAT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct WriteArgs {
    #[command(flatten)]
    pub common: Common,
    /// Write here (e.g. /var/lib/prometheus/node-exporter/lifeboat.prom) instead of stdout
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9813")]
    pub listen: String,
}

fn request(c: &Common) -> Result<MetricsRequest> {
    Ok(MetricsRequest {
        plan: c.plan.clone(),
        state_dir: match &c.state_dir {
            Some(d) => d.clone(),
            None => crate::catalog::default_state_dir()?,
        },
        clock: Arc::new(SystemClock),
    })
}

pub async fn metrics(ctx: &Ctx, cmd: MetricsCommand) -> Result<ExitCode> {
    let env = ctx.env();
    match cmd {
        MetricsCommand::Write(a) => {
            let req = request(&a.common)?;
            match &a.textfile {
                Some(p) => metrics::write_textfile(&env, &req, p).await?,
                None => print!(
                    "{}",
                    metrics::prometheus_text(&metrics::render(&env, &req).await?)
                ),
            }
        }
        MetricsCommand::Serve(a) => {
            let listen: SocketAddr = a.listen.parse().map_err(|e| {
                Error::Usage(format!(
                    "--listen {:?}: {e}; expected HOST:PORT such as 127.0.0.1:9813",
                    a.listen
                ))
            })?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let quiet = ctx.global.quiet;
            tokio::spawn(async move {
                if let Ok(addr) = rx.await {
                    if !quiet {
                        eprintln!("serving metrics at http://{addr}/metrics");
                    }
                }
            });
            metrics::serve(&env, request(&a.common)?, listen, Some(tx)).await?;
        }
    }
    Ok(ExitCode::Ok)
}
