//! `ballast bench soak`: a bounded steady-load run through a whole fleet member (api, worker,
//! scheduler: `ballast serve` started as a child process) on the configured PostgreSQL and a
//! private Redis namespace, sampling what must stay flat after warm-up: Redis memory and keys,
//! the sizes of the queue-like tables, and the member's RSS (its own process, so the load
//! generator's memory is not counted in it). Writes a CSV and an SVG chart of the samples (a
//! script run, not CI).
//!
//! The sampler runs beside the load, never in its way: an earlier version sampled inside the
//! send loop, so each sample (a SCAN of tens of thousands of keys) paused the load and the
//! requests it owed went out at once afterwards — bursts that grew with the key count and showed
//! up as RSS steps of the process that generated them.
//!
//! Load, open model at `rate` requests/s: 40 % signed Stripe webhooks (subscription updates of
//! the run's tenants: inbox rows, stripe.event jobs, entitlement invalidations), 50 % entitlement
//! reads (cache, rate-limit windows), 10 % no-op jobs through `POST /v1/jobs`. Usage intake is
//! left out: its idempotency keys live 24 hours by design, so in a 20-minute run they can only
//! grow (docs/performance.md, "Soak", gives their bound).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plotters::prelude::*;
use redis::AsyncCommands;
use secrecy::SecretString;
use serde::Serialize;

use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::BenchError;
use crate::state::AppState;
use crate::auth::Scope;
use crate::config::Settings;
use crate::newtypes::TenantId;
use crate::stripe::signature;

/// Tables whose size a soak watches: the inbox and what jobs write per event or per minute.
const TABLES: [&str; 6] = ["stripe_events", "job_dead_letters", "email_outbox", "slo_minutes", "subscriptions", "entitlements"];

/// Parameters of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakParams {
    /// Length of the run.
    pub minutes: u32,
    /// Requests per second, all kinds together.
    pub rate: u32,
    /// Tenants the webhooks and reads spread over.
    pub tenants: usize,
    /// Seconds between samples.
    pub sample_secs: u32,
    /// Inbox retention during the run (seconds), so the inbox's steady state shows within it.
    pub retention_secs: u64,
    /// Where the CSV and the chart go.
    pub out: PathBuf,
}

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    /// Seconds since the load started.
    pub at_secs: f64,
    /// Redis `used_memory`.
    pub redis_used_bytes: u64,
    /// Keys of the run's namespace.
    pub redis_keys: u64,
    /// The fleet member's resident set (the `ballast serve` child).
    pub member_rss_bytes: u64,
    /// The load generator's resident set (this process), for comparison.
    pub loadgen_rss_bytes: u64,
    /// Total relation size per watched table.
    pub pg_bytes: BTreeMap<String, i64>,
    /// Requests sent so far.
    pub sent: u64,
    /// Requests that did not get a 2xx.
    pub failed: u64,
}

/// The run's samples and, per series, its value at the end of warm-up and at the end.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The parameters.
    pub params: SoakParams,
    /// Every sample.
    pub samples: Vec<SoakSample>,
    /// Series → (after warm-up, at the end).
    pub growth: BTreeMap<String, (f64, f64)>,
    /// The CSV written.
    pub csv: PathBuf,
    /// The chart written.
    pub chart: PathBuf,
}

/// Runs the soak and removes what it wrote.
pub async fn run(mut settings: Settings, params: SoakParams) -> Result<SoakReport, BenchError> {
    let run_id = super::isolate(&mut settings);
    let secret = format!("whsec_soak_{}", uuid::Uuid::new_v4().simple());
    settings.stripe_webhook_secrets = vec![SecretString::from(secret.clone())];
    settings.inbox_retention = Duration::from_secs(params.retention_secs);
    let member_env = [
        ("BALLAST_REDIS_NAMESPACE", settings.redis_namespace.clone()),
        ("STRIPE_WEBHOOK_SECRET", secret.clone()),
        ("BALLAST_INBOX_RETENTION_SECS", params.retention_secs.to_string()),
    ];
    let state = AppState::build(settings)?;
    if !crate::db::migrations_current(&state.system_pool.0).await.unwrap_or(false) {
        return Err(BenchError::NotReady("migrations pending or database unreachable: run `ballast migrate` first".into()));
    }
    let tenants = super::webhooks::create_tenants(&state, &run_id, params.tenants.max(1)).await?;
    let result = soak(&state, &member_env, &run_id, &secret, &tenants, &params).await;
    let keys_removed = sqlx::query("DELETE FROM api_keys WHERE tenant_id = ANY($1)").bind(&tenants).execute(&state.system_pool.0).await;
    let cleaned = super::webhooks::remove_rows(&state, &run_id, &tenants).await;
    super::delete_namespace(&state.redis, &state.keys).await?;
    let report = result?;
    keys_removed?;
    cleaned?;
    Ok(report)
}

/// The fleet member under test: `ballast serve` (this binary), all roles, on a free loopback
/// port, its log in the report folder.
struct ChildMember {
    child: tokio::process::Child,
    pid: u32,
    base: String,
}

impl ChildMember {
    async fn start(env: &[(&str, String)], log: &Path) -> Result<Self, BenchError> {
        let not_ready = |what: String| BenchError::NotReady(format!("starting the soak's member: {what}"));
        let exe = std::env::current_exe().map_err(|e| not_ready(format!("cannot find this binary ({e})")))?;
        let log_file = std::fs::File::create(log).map_err(|e| not_ready(format!("cannot write {} ({e})", log.display())))?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--roles", "api,worker,scheduler", "--listen", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| not_ready(e.to_string()))?;
        let pid = child.id().ok_or_else(|| not_ready("it exited at once".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| not_ready("no stdout".into()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let listening = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("ballast: listening on ").and_then(|r| r.split_whitespace().next()) {
                    return Some(addr.to_owned());
                }
            }
            None
        };
        let base = match tokio::time::timeout(Duration::from_secs(60), listening).await {
            Ok(Some(base)) => base,
            _ => return Err(not_ready(format!("it did not report listening within 60 s (log: {})", log.display()))),
        };
        // Keep reading what it prints so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, pid, base })
    }

    /// SIGTERM, then waits for the graceful shutdown.
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

async fn soak(
    state: &AppState,
    member_env: &[(&str, String)],
    run_id: &str,
    secret: &str,
    tenants: &[uuid::Uuid],
    params: &SoakParams,
) -> Result<SoakReport, BenchError> {
    let mut keys = Vec::with_capacity(tenants.len());
    for t in tenants {
        let created = crate::auth::store::create(&state.system_pool, Some(TenantId(*t)), &[Scope::EntitlementsRead, Scope::JobsWrite], "soak", "soak")
            .await
            .map_err(|e| BenchError::NotReady(format!("creating the soak's API keys: {e}")))?;
        keys.push(created.key);
    }
    std::fs::create_dir_all(&params.out).map_err(|e| BenchError::NotReady(format!("writing to {} failed ({e})", params.out.display())))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let member = ChildMember::start(member_env, &params.out.join(format!("soak-{stamp}-member.log"))).await?;
    let base = member.base.clone();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(30)).build()?;
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let keys = Arc::new(keys);
    let rate = params.rate.max(1) as u64;
    let total = rate * 60 * params.minutes.max(1) as u64;
    let every = Duration::from_secs(params.sample_secs.max(1) as u64);
    let started = tokio::time::Instant::now();
    let base_created = chrono::Utc::now().timestamp() - 86_400;
    let probe = Probe { state: state.clone(), member_pid: member.pid, started, sent: sent.clone(), failed: failed.clone() };
    let first = probe.sample().await?;
    let load_done = CancellationToken::new();
    let sampler = tokio::spawn(probe.run(first, every, load_done.clone()));
    let mut webhooks = 0u64;
    for i in 0..total {
        let due = started + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due).await;
        let slot = i % 10;
        let request = if slot < 4 {
            let body = super::webhooks::event_body(run_id, tenants, webhooks, base_created);
            webhooks += 1;
            let t = chrono::Utc::now().timestamp();
            let header = format!("t={t},v1={}", signature::sign(secret, t, body.as_bytes()));
            client.post(format!("{base}/webhooks/stripe")).header("stripe-signature", header).header("content-type", "application/json").body(body)
        } else if slot < 9 {
            let key = &keys[(i as usize / 10) % keys.len()];
            client.get(format!("{base}/v1/entitlements/projects")).bearer_auth(key)
        } else {
            let key = &keys[(i as usize / 10) % keys.len()];
            client.post(format!("{base}/v1/jobs")).bearer_auth(key).json(&serde_json::json!({"kind": "noop"}))
        };
        let (sent, failed) = (sent.clone(), failed.clone());
        tokio::spawn(async move {
            let ok = matches!(request.send().await, Ok(r) if r.status().is_success());
            sent.fetch_add(1, Ordering::Relaxed);
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    load_done.cancel();
    let sampled = sampler.await.map_err(|e| BenchError::NotReady(format!("the sampler failed ({e})")));
    member.stop().await;
    let samples = sampled??;

    let csv = params.out.join(format!("soak-{stamp}.csv"));
    let chart = params.out.join(format!("soak-{stamp}.svg"));
    write_csv(&csv, &samples).map_err(|e| BenchError::NotReady(format!("writing {} failed ({e})", csv.display())))?;
    draw(&chart, &samples, params).map_err(|e| BenchError::NotReady(format!("drawing {} failed ({e})", chart.display())))?;
    Ok(SoakReport { params: params.clone(), growth: growth(&samples), samples, csv, chart })
}

/// Each series at the first sample past a quarter of the run (warm-up) and at the last.
fn growth(samples: &[SoakSample]) -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else { return out };
    let warm = samples.iter().find(|s| s.at_secs >= last.at_secs / 4.0).unwrap_or(first);
    out.insert("redis_used_mb".into(), (mb(warm.redis_used_bytes as f64), mb(last.redis_used_bytes as f64)));
    out.insert("redis_keys".into(), (warm.redis_keys as f64, last.redis_keys as f64));
    out.insert("member_rss_mb".into(), (mb(warm.member_rss_bytes as f64), mb(last.member_rss_bytes as f64)));
    out.insert("loadgen_rss_mb".into(), (mb(warm.loadgen_rss_bytes as f64), mb(last.loadgen_rss_bytes as f64)));
    for t in TABLES {
        let at = |s: &SoakSample| mb(s.pg_bytes.get(t).copied().unwrap_or(0) as f64);
        out.insert(format!("{t}_mb"), (at(warm), at(last)));
    }
    out
}

fn mb(bytes: f64) -> f64 {
    (bytes / 1_048_576.0 * 100.0).round() / 100.0
}

/// What the sampler reads, on its own task.
struct Probe {
    state: AppState,
    member_pid: u32,
    started: tokio::time::Instant,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Probe {
    /// Samples every `every` until the load is done, then once more.
    async fn run(self, first: SoakSample, every: Duration, load_done: CancellationToken) -> Result<Vec<SoakSample>, BenchError> {
        let mut samples = vec![first];
        let mut next = self.started + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = load_done.cancelled() => break,
            }
            next += every;
            let s = self.sample().await?;
            eprintln!("soak: {:.0} s, {} sent, {} failed, member RSS {} MB", s.at_secs, s.sent, s.failed, mb(s.member_rss_bytes as f64));
            samples.push(s);
        }
        samples.push(self.sample().await?);
        Ok(samples)
    }

    async fn sample(&self) -> Result<SoakSample, BenchError> {
        let mut conn = self.state.redis.clone();
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
        let redis_used_bytes = info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let mut redis_keys = 0u64;
        for pattern in self.state.keys.deployment_patterns() {
            // A thousand per SCAN call: the default ten made a sample thousands of round trips.
            let mut iter: redis::AsyncIter<String> = conn.scan_options(redis::ScanOptions::default().with_pattern(pattern).with_count(1000)).await?;
            while iter.next_item().await.is_some() {
                redis_keys += 1;
            }
        }
        let sizes: Vec<(String, i64)> =
            sqlx::query_as("SELECT relname::text, pg_total_relation_size(oid) FROM pg_class WHERE relname = ANY($1) AND relkind = 'r'")
                .bind(&TABLES[..])
                .fetch_all(&self.state.system_pool.0)
                .await?;
        Ok(SoakSample {
            at_secs: self.started.elapsed().as_secs_f64(),
            redis_used_bytes,
            redis_keys,
            member_rss_bytes: rss_of(&self.member_pid.to_string()),
            loadgen_rss_bytes: rss_of("self"),
            pg_bytes: sizes.into_iter().collect(),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        })
    }
}

/// VmRSS of /proc/{pid}/status in bytes (0 when unreadable).
fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        .unwrap_or(0)
        * 1024
}

fn write_csv(path: &Path, samples: &[SoakSample]) -> std::io::Result<()> {
    let mut out = String::from("at_secs,redis_used_bytes,redis_keys,member_rss_bytes,loadgen_rss_bytes,sent,failed");
    for t in TABLES {
        out.push_str(&format!(",{t}_bytes"));
    }
    out.push('\n');
    for s in samples {
        out.push_str(&format!(
            "{:.0},{},{},{},{},{},{}",
            s.at_secs, s.redis_used_bytes, s.redis_keys, s.member_rss_bytes, s.loadgen_rss_bytes, s.sent, s.failed
        ));
        for t in TABLES {
            out.push_str(&format!(",{}", s.pg_bytes.get(t).copied().unwrap_or(0)));
        }
        out.push('\n');
    }
    std::fs::write(path, out)
}

/// A chart panel: its title and its labelled lines of (minute, MB) points.
type Panel<'a> = (&'a str, Vec<(&'a str, Vec<(f64, f64)>)>);

/// Three panels over time: Redis memory, process RSS, watched table sizes (MB).
fn draw(path: &Path, samples: &[SoakSample], params: &SoakParams) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| text(&e))?;
    let panels = root.split_evenly((3, 1));
    let minutes = samples.last().map(|s| s.at_secs / 60.0).unwrap_or(1.0).max(1.0 / 60.0);
    let series: [Panel; 3] = [
        ("Redis used memory (MB)", vec![("used_memory", samples.iter().map(|s| (s.at_secs / 60.0, mb(s.redis_used_bytes as f64))).collect())]),
        (
            "Process RSS (MB)",
            vec![
                ("fleet member", samples.iter().map(|s| (s.at_secs / 60.0, mb(s.member_rss_bytes as f64))).collect()),
                ("load generator", samples.iter().map(|s| (s.at_secs / 60.0, mb(s.loadgen_rss_bytes as f64))).collect()),
            ],
        ),
        (
            "Table size (MB)",
            TABLES
                .iter()
                .map(|t| (*t, samples.iter().map(|s| (s.at_secs / 60.0, mb(s.pg_bytes.get(*t).copied().unwrap_or(0) as f64))).collect()))
                .collect(),
        ),
    ];
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (panel, (title, lines))) in panels.iter().zip(series).enumerate() {
        let top = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, v)| *v)).fold(0.0_f64, f64::max).max(0.01) * 1.15;
        let caption = if i == 0 { format!("soak: {} req/s for {} min — {title}", params.rate, params.minutes) } else { title.to_owned() };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..minutes, 0.0..top)
            .map_err(|e| text(&e))?;
        chart.configure_mesh().x_desc("minute").draw().map_err(|e| text(&e))?;
        for (j, (label, points)) in lines.into_iter().enumerate() {
            let color = colors[j % colors.len()];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| text(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| text(&e))?;
    }
    root.present().map_err(|e| text(&e))
}
