//! `ballast loadtest`: capacity load tests and their stored baselines.

use anyhow::{Context, bail};
use ballast::config::Settings;
use ballast::state::AppState;
use clap::Subcommand;
use std::process::ExitCode;


#[derive(Debug, clap::Args)]
pub(super) struct LoadtestArgs {
    /// The level (deploy/loadtest.toml): steady, peak, abuse, …
    #[arg(long)]
    level: Option<String>,
    /// Base URL of the target, e.g. https://staging.example.com
    #[arg(long)]
    target: Option<String>,
    /// Override the level's duration (e.g. 30s, 5m).
    #[arg(long)]
    duration: Option<String>,
    /// Override the level's arrival rate (requests per second).
    #[arg(long)]
    rate: Option<u32>,
    /// Also write the JSON report and SVG chart into this folder (the run is stored as a
    /// baseline in the database either way).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(super) enum LoadtestCommand {
    /// Stored runs, oldest first, and a chart of their p99 and throughput over time.
    History {
        /// Only this level.
        #[arg(long)]
        level: Option<String>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Also draw the runs' p99 and throughput over time into this SVG file.
        #[arg(long)]
        chart: Option<std::path::PathBuf>,
    },
}

pub(super) async fn loadtest(settings: Settings, command: Option<LoadtestCommand>, args: LoadtestArgs, json: bool) -> anyhow::Result<ExitCode> {
    use ballast::perf::loadtest;
    let state = AppState::build(settings)?;
    if let Some(LoadtestCommand::History { level, chart, limit }) = command {
        // System pool: runs are the fleet's record.
        let mut runs = loadtest::history(&state.system_pool.0, level.as_deref()).await?;
        let total = runs.len();
        runs.drain(..total.saturating_sub(limit));
        if let Some(chart) = &chart {
            if let Some(dir) = chart.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            loadtest::chart::history_chart(chart, &runs).map_err(|e| anyhow::anyhow!("writing {}: {e}", chart.display()))?;
        }
        if json {
            println!("{}", serde_json::to_string(&runs)?);
        } else {
            let rows = runs.iter().map(|r| {
                vec![r.started_at.to_rfc3339(), r.level.clone(), r.rate.to_string(), format!("{:.1}", r.throughput), format!("{:.2}", r.p50_ms), format!("{:.2}", r.p99_ms), if r.passed { "pass" } else { "FAIL" }.into(), r.target.clone()]
            });
            println!("{}", super::render::table(&["started", "level", "rate", "answers/s", "p50 ms", "p99 ms", "result", "target"], rows));
            if let Some(chart) = &chart {
                println!("chart: {}", chart.display());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(name), Some(target)) = (args.level, args.target) else {
        bail!("give --level and --target (or `ballast loadtest history`)");
    };
    let config = loadtest::LoadtestConfig::load(&state.settings.loadtest_file)?;
    let mut level = config.levels.get(&name).cloned().ok_or_else(|| {
        anyhow::anyhow!("no level {name:?} in {}; defined: {}", state.settings.loadtest_file.shown(), config.levels.keys().cloned().collect::<Vec<_>>().join(", "))
    })?;
    if let Some(d) = args.duration {
        level.duration = humantime::parse_duration(&d).map_err(|e| anyhow::anyhow!("--duration {d:?}: {e}"))?;
    }
    if let Some(r) = args.rate {
        level.rate = r.max(1);
    }
    let report = loadtest::run(&name, &level, &target, state.settings.loadtest_key.as_ref()).await?;
    let id = loadtest::store(&state.system_pool.0, &report).await?;
    let written = match &args.out {
        Some(dir) => Some(loadtest::write_report(dir, &report)?),
        None => None,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let s = report.statuses;
        println!("load test {name} against {target}: {} requests at {}/s over {:.0} s (run {id})", report.sent, report.rate, report.duration_secs);
        println!("  latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms (from each request's scheduled time)", report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms);
        println!("  answers/s {:.1}; 2xx/3xx {}  429 {}  other 4xx {}  5xx {}  no answer {}  not sent (client full) {}", report.throughput, s.ok, s.limited, s.client_error, s.server_error, s.failed, report.dropped);
        println!("  {}: {}", if report.passed { "PASS" } else { "FAIL" }, report.verdict);
        if let Some((json_path, svg_path)) = written {
            println!("  report {}  chart {}", json_path.display(), svg_path.display());
        }
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
