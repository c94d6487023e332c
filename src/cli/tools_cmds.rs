//! Tools: `demo`, and the hidden `gen-data` and `bench-pipeline` used by the benchmarks.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::output::print_json;
use crate::error::ExitCode;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// State directory for the demo (default: $XDG_STATE_HOME/lifeboat/demo or ~/.local/state/lifeboat/demo)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Size of the sample SQL dump in MiB
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub size: u64,
}

#[derive(Args, Debug)]
pub struct GenDataArgs {
    /// `sql` (a plain-SQL dump with realistic entropy) or `tree` (many files of mixed kinds)
    #[arg(long)]
    pub kind: String,
    /// Approximate size in MiB
    #[arg(long)]
    pub size: u64,
    /// Output file (sql) or directory (tree)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct BenchPipelineArgs {
    /// Input file (its first --limit MiB are read into memory first)
    pub file: PathBuf,
    #[arg(long, default_value_t = 512)]
    pub limit: u64,
    /// zstd level (default: the level `init` gives new repositories)
    #[arg(long, default_value_t = crate::repo::DEFAULT_COMPRESSION_LEVEL)]
    pub level: i32,
    /// Run this many passes at once, one per thread, over the same data: with one per core,
    /// the per-core rate while every core is busy (shared caches and memory bandwidth), the
    /// rate a backup using all cores can at best reach on each
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct BenchRestoreFloorArgs {
    /// Snapshot (`latest` or an id prefix)
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Measure the local floor (decode CPU over the cores, O_DIRECT write of the snapshot's
    /// bytes), writing a scratch file in this directory
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Measure the S3 read floor: every pack of the snapshot fetched with aws-sdk-s3 from this
    /// location (the same `s3://…` URL as `--repo`)
    #[arg(long, value_name = "URL")]
    pub s3_url: Option<String>,
    /// Measure the upload floor: the snapshot's packs PUT with aws-sdk-s3 to the first of
    /// these locations alone, then to all of them (repeat for each region; `s3://…` URLs)
    #[arg(long = "put-url", value_name = "URL")]
    pub put_urls: Vec<String>,
}

pub async fn bench_restore_floor(ctx: &super::Ctx, a: BenchRestoreFloorArgs) -> Result<ExitCode> {
    let s3 = a
        .s3_url
        .as_deref()
        .map(crate::store::s3::S3Config::from_url)
        .transpose()
        .map_err(Error::Usage)?;
    let put = a
        .put_urls
        .iter()
        .map(|u| crate::store::s3::S3Config::from_url(u))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    let target = ctx.target(None, false)?;
    let req = crate::ops::restore::FloorRequest {
        snapshot: a.snapshot,
        scratch: a.scratch,
        s3,
        put,
    };
    let f = crate::ops::restore::floors(&target, req).await?;
    print_json(&f);
    Ok(ExitCode::Ok)
}

pub fn gen_data(a: GenDataArgs) -> Result<ExitCode> {
    let size = a.size * 1024 * 1024;
    match a.kind.as_str() {
        "sql" => crate::demo::sample::write_sql_dump_file(&a.out, size, a.seed)?,
        "tree" => crate::demo::sample::write_tree(&a.out, size, a.seed)?,
        other => {
            return Err(Error::Usage(format!(
                "--kind {other:?}: expected sql or tree"
            )))
        }
    }
    Ok(ExitCode::Ok)
}

pub fn bench_pipeline(a: BenchPipelineArgs) -> Result<ExitCode> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(&a.file)
        .and_then(|f| f.take(a.limit << 20).read_to_end(&mut data))
        .map_err(|e| Error::io("read", &a.file, e))?;
    let keys = crate::crypto::Keys::derive(&crate::crypto::MasterKey::generate());
    let repo = crate::ids::RepoId::random();
    let threads = a.threads.max(1);
    let passes: Vec<crate::pipeline::CorePass> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    crate::pipeline::single_core_pass(
                        &data,
                        &keys,
                        &repo,
                        crate::repo::ChunkerParams::default(),
                        a.level,
                    )
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .collect()
    });
    // Per-core figures: each pass's rate, averaged over the passes that ran at once.
    let mb = data.len() as f64 / 1e6;
    let n = passes.len() as f64;
    let seal = passes.iter().map(|p| p.seal_secs).sum::<f64>() / n;
    let verify = passes.iter().map(|p| p.verify_secs).sum::<f64>() / n;
    let cpu = passes.iter().map(|p| p.cpu_secs).sum::<f64>() / n;
    print_json(&json!({
        "bytes": data.len(),
        "level": a.level,
        "threads": threads,
        "seconds": seal,
        "mb_per_sec": mb / seal,
        "verify_seconds": verify,
        "with_verify_mb_per_sec": mb / (seal + verify),
        // Per pass, both parts: the CPU the floor's stages cost, whatever the load.
        "cpu_seconds": cpu,
        "with_verify_mb_per_cpu_sec": mb / cpu,
    }));
    Ok(ExitCode::Ok)
}
