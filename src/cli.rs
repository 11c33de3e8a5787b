//! Command-line interface. Data output is a table for people or `--json` for machines.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ballast::app::{self, AppState, Member};
use ballast::bench::jobs::BenchParams;
use ballast::bench::webhooks::WebhookBenchParams;
use ballast::config::Settings;
use ballast::domain::TenantId;
use ballast::jobs::Registry;
use ballast::queue::worker::WorkerOptions;
use ballast::queue::{EnqueueRequest, dead};
use ballast::runbook::Progress;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ballast",
    version,
    about = "Ballast: the worker fleet behind a growing SaaS (Stripe webhooks, dunning, usage, caches, SLOs).",
    long_about = "Ballast: the worker fleet behind a growing SaaS.\n\n\
        Settings come from the environment (DATABASE_URL, BALLAST_SYSTEM_DATABASE_URL, REDIS_URL, \
        BALLAST_*, OTEL_*), optionally from a TOML file named by BALLAST_CONFIG. \
        See deploy/ballast.example.toml for every setting."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a fleet member with the given roles until SIGTERM or Ctrl-C.
    Serve {
        /// Comma-separated roles: api (intake HTTP), worker (job queues), scheduler (cron leader).
        #[arg(long, default_value = "api,worker,scheduler")]
        roles: String,
        /// Listen address of the api role (overrides BALLAST_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Ask this member's own listener for a probe path (container health checks: the image
    /// has no curl). Exit 0 when it answers 2xx.
    Probe {
        /// The path to GET on BALLAST_LISTEN.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// Apply pending database migrations as the owner role (BALLAST_OWNER_DATABASE_URL).
    Migrate,
    /// Put one job on its queue.
    Enqueue {
        /// Job kind, as named in jobs/ (e.g. noop).
        kind: String,
        /// Tenant the job acts for.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// JSON arguments of the job.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// A second enqueue with the same key (within 7 days) does nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect queues and dead letters.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// API keys for app services: create (printed once), list, revoke.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Rate limits: temporary overrides (audited, expiring by themselves) and recent blocks.
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// Dunning: advance open cases by the policy (deploy/dunning.toml).
    Dunning {
        #[command(subcommand)]
        command: DunningCommand,
    },
    /// The email outbox: what is pending, sent or dead; re-drive what is stuck.
    Emails {
        #[command(subcommand)]
        command: EmailsCommand,
    },
    /// Usage metering.
    Usage {
        #[command(subcommand)]
        command: UsageCommand,
    },
    /// The cache: warm it now, or remove old key shapes after a deploy.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Feature flags: list them, or switch one (audited; every member sees it at once).
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// Capacity load test: `--level L --target URL` runs a level of deploy/loadtest.toml at its
    /// open-model arrival rate and writes a report (table, JSON, SVG chart), stored as a
    /// baseline; `history` lists and draws the baselines over time.
    #[command(args_conflicts_with_subcommands = true)]
    Loadtest {
        #[command(subcommand)]
        command: Option<LoadtestCommand>,
        #[command(flatten)]
        run: LoadtestArgs,
    },
    /// Runbooks: list and show the pages, run a page's admin job (a dry run unless --execute).
    Runbook {
        #[command(subcommand)]
        command: RunbookCommand,
    },
    /// Service level objectives: SLI, budget left, burn per window pair, alert state.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Benchmarks (release build; figures for README, never a timed test).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, clap::Args)]
struct LoadtestArgs {
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
    /// Where the JSON report and SVG chart go.
    #[arg(long, default_value = "loadtest-reports")]
    out: std::path::PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum LoadtestCommand {
    /// Stored runs, oldest first, and a chart of their p99 and throughput over time.
    History {
        /// Only this level.
        #[arg(long)]
        level: Option<String>,
        /// Where the chart goes.
        #[arg(long, default_value = "loadtest-reports/history.svg")]
        chart: std::path::PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RunbookCommand {
    /// Every page: name, title, the admin job it runs.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One page, whole.
    Show {
        /// The page's name (its file name without .md).
        name: String,
    },
    /// Run a page's admin job. Without --execute it reports what it finds and what it would
    /// do; with --execute it shows that report, then acts. Every run is audited.
    Run {
        /// The page's name.
        name: String,
        /// Act (after reporting what will be touched).
        #[arg(long)]
        execute: bool,
        /// A parameter of the admin job, KEY=VALUE (repeatable); values that parse as JSON
        /// (numbers, true/false) are taken as such. The page lists them.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Queue the run on the fleet instead of running it in this shell.
        #[arg(long)]
        enqueue: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SloCommand {
    /// Each SLO (deploy/slos.toml) over its window: SLI, error budget left, burn rate of every
    /// window pair (scaled to the window) and the stored alert state. Reads only.
    Status {
        /// Evaluate as of this day or time (2026-12-01 or RFC 3339) instead of now.
        #[arg(long)]
        as_of: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Fill the plan catalogue, feature flags and every active tenant's entitlements now (the
    /// cache.warm job, run here). Safe at any time.
    Warm {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// After a deploy that bumped a cached family's shape version: count keys per version; with
    /// --execute, warm the new shape and remove every old version (SCAN in batches, audited).
    Reshape {
        /// Act; without it, count only.
        #[arg(long)]
        execute: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FlagsCommand {
    /// Every flag with its rollout.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create or change a flag. Unset options keep their value (a new flag: off, 100 %).
    Set {
        /// Flag name: a-z, 0-9, '_', '.', '-'.
        name: String,
        /// Switch it on.
        #[arg(long, conflicts_with = "off")]
        on: bool,
        /// Switch it off for everyone.
        #[arg(long)]
        off: bool,
        /// Share of tenants it is on for, 0 to 100 (stable per tenant; raising it only adds).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        rollout: Option<u8>,
        /// What it switches.
        #[arg(long)]
        description: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UsageCommand {
    /// Move closed usage windows into the ledger (exactly once) and report pending ledger rows
    /// to Stripe, now. The catalogue runs this every minute; it is safe to run at any time.
    Flush {
        /// Also flush the current minute's window (safe: later writes start a fresh one).
        #[arg(long)]
        all: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DunningCommand {
    /// Do every due step of every open case once (emails, invoice retries, restriction, final
    /// action). Safe to repeat: each step is keyed by (case, stage).
    Run {
        /// Act as of this day or time (2026-12-01 or RFC 3339) instead of now.
        #[arg(long)]
        as_of: Option<String>,
        /// Only this tenant's cases.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Report what would be done; write and call nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EmailsCommand {
    /// Outbox rows, newest first.
    List {
        /// Only pending, sent or dead rows.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue the send job of pending rows (and, with --dead, of dead rows set back to pending).
    /// Without --execute it only counts.
    Redrive {
        /// Also retry dead rows (after fixing what made the relay refuse them).
        #[arg(long)]
        dead: bool,
        /// Act; without it, report only.
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// The tenant the key acts for; omit for a service-wide key (which names the tenant in
        /// each request's Ballast-Tenant header).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Comma-separated scopes: usage:write, jobs:write, entitlements:read, slo:write.
        #[arg(long)]
        scopes: String,
        /// A name for people ("billing-service prod").
        #[arg(long, default_value = "unnamed")]
        name: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves), newest first.
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (from `ballast keys list`).
        id: uuid::Uuid,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LimitsCommand {
    /// Raise a limit (--limit N) or lift it (--allow) for one subject, for --ttl.
    Override {
        /// Policy: anonymous, key, tenant_writes.
        #[arg(long)]
        policy: String,
        /// Subject: ip:ADDR, key:UUID or tenant:UUID.
        #[arg(long)]
        subject: String,
        /// The limit to use instead of the policy's.
        #[arg(long, conflicts_with = "allow", required_unless_present = "allow")]
        limit: Option<u32>,
        /// No limit at all.
        #[arg(long)]
        allow: bool,
        /// How long, e.g. 30m, 2h (at most 7 days).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an override before it expires.
    Revert {
        /// Policy.
        #[arg(long)]
        policy: String,
        /// Subject.
        #[arg(long)]
        subject: String,
    },
    /// Most blocked policy|subject pairs over the last --minutes.
    Blocks {
        /// Minutes to look back.
        #[arg(long, default_value_t = 15)]
        minutes: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// No-op job throughput and pickup latency on the configured Redis (a private namespace),
    /// following the BullMQ peer's protocol.
    Jobs {
        /// Jobs in the backlog phase.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Worker concurrency.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Enqueue rate of the pickup phase (jobs/s).
        #[arg(long, default_value_t = 500)]
        pickup_rate: u32,
        /// Length of the pickup phase (s).
        #[arg(long, default_value_t = 5)]
        pickup_secs: u32,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Usage intake in batches of 100 (events/s, latency) and the flush of many counters.
    Usage {
        /// Seconds of posting.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Concurrent senders.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Counters to flush.
        #[arg(long, default_value_t = 100_000)]
        counters: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Entitlement reads (GET /v1/entitlements/{feature}) on a cache hit and on a miss, the
    /// cache reader alone, and reads per second of one process. Uses the configured PostgreSQL
    /// (its own tenants, deleted afterwards) and a private Redis namespace.
    Entitlements {
        /// Tenants, one key each.
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Requests per latency phase (hits get a tenth more, unmeasured, first).
        #[arg(long, default_value_t = 5_000)]
        n: u64,
        /// Closed-loop clients of the throughput phase.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds of the throughput phase.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The rate limiter's cost per request: the same key route with and without it, one run.
    Limiter {
        /// Requests per side (plus a tenth as warm-up).
        #[arg(long, default_value_t = 5_000)]
        n: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A bounded steady load (webhooks, entitlement reads, no-op jobs) through an api + worker +
    /// scheduler member (`ballast serve`, started as a child process), sampling Redis memory and
    /// keys, table sizes and the member's RSS into a CSV and an SVG chart. Uses the configured
    /// PostgreSQL (its own tenants, deleted afterwards) and a private Redis namespace. A script
    /// run, not CI: it takes `--minutes`.
    Soak {
        /// Length of the run.
        #[arg(long, default_value_t = 20)]
        minutes: u32,
        /// Requests per second, all kinds together (open loop).
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Tenants the load spreads over.
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        sample_secs: u32,
        /// Inbox retention during the run (seconds), so its steady state shows within the run.
        #[arg(long, default_value_t = 120)]
        retention_secs: u64,
        /// Where the CSV and the chart go.
        #[arg(long, default_value = "soak-reports")]
        out: std::path::PathBuf,
    },
    /// Signed Stripe webhooks at a fixed arrival rate into an in-process api + worker member:
    /// POST /webhooks/stripe latency and received-to-entitlements-updated latency. Uses the
    /// configured PostgreSQL (its own tenants, deleted afterwards) and a private Redis namespace.
    Webhooks {
        /// Arrival rate (requests/s), open loop.
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        secs: u32,
        /// Seconds sent first and not counted (tables are analyzed one second in).
        #[arg(long, default_value_t = 3)]
        warmup_secs: u32,
        /// Tenants the events are spread over.
        #[arg(long, default_value_t = 200)]
        tenants: usize,
        /// Run the api role alone (no workers): intake latency by itself.
        #[arg(long)]
        ingest_only: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Per job kind: ready, scheduled (retries, delayed), running (in flight), open dead
    /// letters, age of the oldest ready job.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job: its payload, attempt, last error and where it is (queued or dead). Takes a
    /// job id or a dead letter's id.
    Show {
        /// Job id, or dead letter id.
        id: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Open dead letters, newest first.
    Dead {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only those whose error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue dead letters' jobs again with a fresh attempt count: one by id, or every open one
    /// matching --kind/--error with --all. Audited.
    Retry {
        /// The dead letter's id (from `ballast jobs dead`).
        id: Option<uuid::Uuid>,
        /// Bulk: only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Bulk: only those whose error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Bulk: every open dead letter matching the filters (required without an id).
        #[arg(long)]
        all: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Close dead letters without running them (kept for the record): one by id, or every open
    /// one matching --kind/--error with --all. Audited.
    Discard {
        /// The dead letter's id.
        id: Option<uuid::Uuid>,
        /// Bulk: only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Bulk: only those whose error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Bulk: every open dead letter matching the filters (required without an id).
        #[arg(long)]
        all: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The command line, parsed (clap exits with its message on bad arguments and on --help).
pub(crate) fn parse() -> Cli {
    Cli::parse()
}

pub(crate) async fn run(cli: Cli, mut settings: Settings) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { roles, listen } => {
            if let Some(addr) = listen {
                settings.listen = addr;
            }
            let roles = app::parse_roles(&roles)?;
            let state = AppState::build(settings)?;
            let member = Member::start(state, &roles, WorkerOptions::new(Registry::standard())).await?;
            if let Some(addr) = member.api_addr {
                tracing::info!(message = "Ballast is listening.", addr = %addr, roles = ?roles);
                println!("ballast: listening on http://{addr} (roles: {roles:?})");
                println!("try: curl -s http://{addr}/readyz");
            }
            member.run_until_signal().await;
        }
        Command::Probe { path } => {
            let mut addr = settings.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let url = format!("http://{addr}{path}");
            let answer = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build()?.get(&url).send().await;
            return Ok(match answer {
                Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
                Ok(r) => {
                    eprintln!("{url}: {}", r.status());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    ExitCode::FAILURE
                }
            });
        }
        Command::Migrate => {
            if settings.owner_database_url.is_none() {
                bail!("configuration error: BALLAST_OWNER_DATABASE_URL: missing (migrations run as the owner role)");
            }
            let applied = ballast::db::migrate(settings.migration_url()).await.context("migrate")?;
            println!("migrations: {applied} applied, schema current");
        }
        Command::Enqueue { kind, tenant, payload, idempotency_key, json } => {
            let payload: serde_json::Value =
                serde_json::from_str(&payload).with_context(|| "--payload is not valid JSON")?;
            let state = AppState::build(settings)?;
            let mut req = EnqueueRequest::new(kind.as_str(), payload);
            req.tenant = tenant;
            req.idempotency_key = idempotency_key;
            let done = state.queue.enqueue(req).await?;
            if json {
                println!("{}", serde_json::to_string(&done)?);
            } else if done.duplicate {
                println!("not queued: idempotency key already used (job {})", done.id);
            } else {
                println!("queued {kind} job {}", done.id);
            }
        }
        Command::Jobs { command } => {
            let state = AppState::build(settings)?;
            jobs(state, command).await?;
        }
        Command::Bench { command } => bench(settings, command).await?,
        Command::Dunning { command: DunningCommand::Run { as_of, tenant, dry_run, json } } => {
            let as_of = match as_of {
                None => chrono::Utc::now(),
                Some(raw) => parse_instant(&raw)?,
            };
            let state = AppState::build(settings)?;
            let report = ballast::dunning::run(&state.dunning_deps(), as_of, tenant, dry_run).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "dunning as of {}{}: {} effects consumed, {} open cases, {} actions",
                    as_of.to_rfc3339(),
                    if dry_run { " (dry run)" } else { "" },
                    report.effects_consumed,
                    report.cases,
                    report.actions.len()
                );
                for a in &report.actions {
                    println!("  {} {} {:<12} {}", a.tenant, a.invoice, a.stage, a.outcome);
                }
            }
        }
        Command::Usage { command: UsageCommand::Flush { all, json } } => {
            let state = AppState::build(settings)?;
            let r = ballast::usage::flush::run(&state.usage_deps(), chrono::Utc::now(), all).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("flushed {} windows into {} ledger rows; reported {} to Stripe, {} refused", r.windows, r.ledger_rows, r.reported, r.dead);
            }
        }
        Command::Emails { command } => emails(AppState::build(settings)?, command).await?,
        Command::Cache { command } => cache(AppState::build(settings)?, command).await?,
        Command::Runbook { command } => runbook(settings, command).await?,
        Command::Loadtest { command, run } => return loadtest(settings, command, run).await,
        Command::Slo { command: SloCommand::Status { as_of, json } } => {
            let now = match as_of {
                None => chrono::Utc::now(),
                Some(raw) => parse_instant(&raw)?,
            };
            let state = AppState::build(settings)?;
            let statuses = ballast::slo::evaluate::run(&state.slo_deps(), now, false).await?;
            if json {
                println!("{}", serde_json::to_string(&statuses)?);
            } else {
                print_slo_status(&statuses);
            }
        }
        Command::Flags { command } => flags(AppState::build(settings)?, command).await?,
        Command::Keys { command } => keys(AppState::build(settings)?, command).await?,
        Command::Limits { command } => limits(AppState::build(settings)?, command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The dead letters a retry or discard acts on: the one named, or (with --all) every open one
/// matching the filters.
async fn dead_selection(
    state: &AppState,
    id: Option<uuid::Uuid>,
    kind: Option<&str>,
    error: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    match (id, all) {
        (Some(id), false) if kind.is_none() && error.is_none() => Ok(vec![id]),
        (None, true) => Ok(dead::matching(&state.system_pool, kind, error, i64::MAX).await?.into_iter().map(|d| d.id).collect()),
        _ => bail!("name one dead letter by id, or use --all (with --kind/--error to narrow it)"),
    }
}

async fn jobs(state: AppState, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { json } => {
            let stats = state.queue.stats().await?;
            let dead = dead::open_counts(&state.system_pool).await?;
            if json {
                let rows: Vec<_> = stats
                    .iter()
                    .map(|s| {
                        let mut v = serde_json::to_value(s).unwrap_or_default();
                        v["dead"] = serde_json::json!(dead.get(&s.kind).copied().unwrap_or(0));
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{:<24} {:>8} {:>10} {:>8} {:>8} {:>12}", "KIND", "READY", "SCHEDULED", "RUNNING", "DEAD", "OLDEST (s)");
                for s in stats {
                    let age = s.oldest_ready_age_secs.map(|a| format!("{a:.1}")).unwrap_or_else(|| "-".into());
                    let d = dead.get(&s.kind).copied().unwrap_or(0);
                    println!("{:<24} {:>8} {:>10} {:>8} {:>8} {:>12}", s.kind, s.ready, s.scheduled, s.running, d, age);
                }
            }
        }
        JobsCommand::Show { id, json } => {
            let shown = if let Some(queued) = state.queue.find(&id).await? {
                serde_json::json!({"where": "queued", "job_id": queued.id, "kind": queued.kind, "tenant": queued.tenant, "attempt": queued.attempt,
                    "last_error": queued.last_error, "payload": queued.payload, "enqueued_at_us": queued.enqueued_at_us})
            } else if let Some(d) = dead::find(&state.system_pool, &id).await? {
                serde_json::json!({"where": "dead", "dead_letter": d.id, "job_id": d.job_id, "kind": d.kind, "tenant": d.tenant_id, "attempt": d.attempts,
                    "last_error": d.error, "payload": d.envelope.get("payload").cloned().unwrap_or(d.envelope.clone()), "failed_at": d.failed_at})
            } else {
                bail!("no job {id} queued or dead (completed jobs are not kept; `ballast jobs dead` lists dead letters)");
            };
            if json {
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            }
        }
        JobsCommand::Dead { kind, error, limit, json } => {
            let rows = dead::matching(&state.system_pool, kind.as_deref(), error.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no open dead letters");
            } else {
                println!("{:<36} {:<20} {:>8} {:<25} ERROR", "ID", "KIND", "ATTEMPTS", "FAILED AT");
                for r in rows {
                    println!("{:<36} {:<20} {:>8} {:<25} {}", r.id, r.kind, r.attempts, r.failed_at.to_rfc3339(), r.error);
                }
            }
        }
        JobsCommand::Retry { id, kind, error, all, json } => {
            let ids = dead_selection(&state, id, kind.as_deref(), error.as_deref(), all).await?;
            let mut jobs = Vec::with_capacity(ids.len());
            for (i, d) in ids.iter().enumerate() {
                jobs.push(dead::retry(&state.system_pool, &state.queue, *d).await?);
                Progress::terminal().report("retry dead letters", i as u64 + 1, Some(ids.len() as u64));
            }
            let mut conn = state.system_pool.0.acquire().await?;
            let params = serde_json::json!({"dead_letters": ids, "kind": kind, "error": error});
            ballast::auth::store::audit(&mut conn, None, &actor(), "jobs.retry", params).await?;
            if json {
                println!("{}", serde_json::json!({"retried": ids, "job_ids": jobs}));
            } else {
                println!("re-queued {} dead letters", ids.len());
            }
        }
        JobsCommand::Discard { id, kind, error, all, json } => {
            let ids = dead_selection(&state, id, kind.as_deref(), error.as_deref(), all).await?;
            let n = dead::discard(&state.system_pool, &ids, &actor()).await?;
            let mut conn = state.system_pool.0.acquire().await?;
            let params = serde_json::json!({"dead_letters": ids, "kind": kind, "error": error, "discarded": n});
            ballast::auth::store::audit(&mut conn, None, &actor(), "jobs.discard", params).await?;
            if json {
                println!("{}", serde_json::json!({"discarded": n}));
            } else {
                println!("discarded {n} dead letters (kept for the record, no longer open)");
            }
        }
    }
    Ok(())
}

async fn bench(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Jobs { n, concurrency, pickup_rate, pickup_secs, json } => {
            let report = ballast::bench::jobs::run(settings, BenchParams { n, concurrency, pickup_rate, pickup_secs }).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "noop x{n}, concurrency {concurrency}: enqueue {:.0} jobs/s, processed {:.0} jobs/s, pickup p50 {:.2} ms / p99 {:.2} ms ({} samples)",
                    report.enqueue_per_sec, report.processed_per_sec, report.pickup_p50_ms, report.pickup_p99_ms, report.pickup_samples
                );
            }
        }
        BenchCommand::Usage { secs, clients, counters, json } => {
            let r = ballast::bench::usage::run(settings, secs, clients, counters).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "usage: {} batches of 100 from {clients} senders: {:.0} events/s, POST p50 {:.2} ms / p99 {:.2} ms; flush of {} counters into the ledger: {:.2} s",
                    r.batches, r.events_per_sec, r.post_p50_ms, r.post_p99_ms, r.counters, r.flush_secs
                );
            }
        }
        BenchCommand::Entitlements { tenants, n, concurrency, secs, json } => {
            let r = ballast::bench::entitlements::run(settings, tenants, n, concurrency, secs).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "GET /v1/entitlements/projects x{n}, {tenants} tenants: hit p50 {:.3} ms / p99 {:.3} ms; miss p50 {:.3} ms / p99 {:.3} ms; reader alone (hit) p50 {:.3} ms / p99 {:.3} ms; {:.0} reads/s with {concurrency} clients",
                    r.hit_p50_ms, r.hit_p99_ms, r.miss_p50_ms, r.miss_p99_ms, r.reader_hit_p50_ms, r.reader_hit_p99_ms, r.reads_per_sec
                );
            }
        }
        BenchCommand::Limiter { n, json } => {
            let r = ballast::bench::limiter::run(settings, n).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "GET /v1/entitlements x{n} per side: with limiter p50 {:.3} ms / p99 {:.3} ms; without p50 {:.3} ms / p99 {:.3} ms; overhead p50 {:+.3} ms / p99 {:+.3} ms",
                    r.limited_p50_ms, r.limited_p99_ms, r.unlimited_p50_ms, r.unlimited_p99_ms,
                    r.limited_p50_ms - r.unlimited_p50_ms, r.limited_p99_ms - r.unlimited_p99_ms
                );
            }
        }
        BenchCommand::Soak { minutes, rate, tenants, sample_secs, retention_secs, out } => {
            let params = ballast::bench::soak::SoakParams { minutes, rate, tenants, sample_secs, retention_secs, out };
            let r = ballast::bench::soak::run(settings, params).await?;
            println!("soak: {rate} req/s for {minutes} min; samples in {} and {}", r.csv.display(), r.chart.display());
            println!("{:<24} {:>14} {:>14}", "series", "after warm-up", "at the end");
            for (name, (warm, end)) in &r.growth {
                println!("{name:<24} {warm:>14.2} {end:>14.2}");
            }
            if let Some(last) = r.samples.last() {
                println!("requests: {} sent, {} without a 2xx", last.sent, last.failed);
            }
        }
        BenchCommand::Webhooks { rate, secs, warmup_secs, tenants, ingest_only, json } => {
            let r = ballast::bench::webhooks::run(settings, WebhookBenchParams { rate, secs, warmup_secs, tenants, ingest_only }).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let to_entitlements = match (r.to_entitlements_p50_ms, r.to_entitlements_p99_ms) {
                    (Some(p50), Some(p99)) => format!("received -> entitlements p50 {p50:.2} ms / p99 {p99:.2} ms; {} inbox rows processed", r.processed),
                    _ => "ingest only (no workers)".to_owned(),
                };
                println!(
                    "webhooks at {rate}/s for {secs} s over {tenants} tenants: {} requests ({} accepted, {} failed), achieved {:.0}/s; \
                     POST p50 {:.2} ms / p99 {:.2} ms / max {:.2} ms; {to_entitlements}{}{}",
                    r.requests, r.accepted, r.failed, r.achieved_per_sec, r.ingest_p50_ms, r.ingest_p99_ms, r.ingest_max_ms,
                    if r.analyzed { "" } else { " (tables not analyzed: set BALLAST_OWNER_DATABASE_URL)" },
                    if r.refusals.is_empty() { String::new() } else { format!("; refused: {:?}", r.refusals) }
                );
            }
        }
    }
    Ok(())
}

/// Who runs a command, for the audit log.
fn actor() -> String {
    std::env::var("BALLAST_ACTOR").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into())
}

async fn keys(state: AppState, command: KeysCommand) -> anyhow::Result<()> {
    use ballast::auth::store;
    match command {
        KeysCommand::Create { tenant, scopes, name, json } => {
            let scopes = ballast::auth::parse_scopes(&scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let created = store::create(&state.system_pool, tenant, &scopes, &name, &actor()).await?;
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!("{}", created.key);
                eprintln!(
                    "key {} ({}) for {}: scopes {}. Shown once; only its hash is stored.",
                    created.info.id,
                    created.info.name,
                    created.info.tenant_id.map(|t| format!("tenant {t}")).unwrap_or_else(|| "all tenants (service-wide)".into()),
                    created.info.scopes.join(",")
                );
            }
        }
        KeysCommand::List { tenant, json } => {
            let rows = store::list(&state.system_pool, tenant).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{:<36} {:<36} {:<16} {:<20} {:<8} SCOPES", "ID", "TENANT", "PREFIX", "NAME", "STATE");
                for k in rows {
                    let tenant = k.tenant_id.map(|t| t.to_string()).unwrap_or_else(|| "(service-wide)".into());
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    println!("{:<36} {:<36} {:<16} {:<20} {:<8} {}", k.id, tenant, k.prefix, k.name, state, k.scopes.join(","));
                }
            }
        }
        KeysCommand::Revoke { id, json } => {
            let info = store::revoke(&state.system_pool, id, &actor()).await?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("revoked key {} ({})", info.id, info.name);
            }
        }
    }
    Ok(())
}

fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    let ttl = humantime::parse_duration(s.trim()).map_err(|e| anyhow::anyhow!("--ttl {s:?}: {e} (e.g. 30m, 2h)"))?;
    if ttl < std::time::Duration::from_secs(1) || ttl > std::time::Duration::from_secs(7 * 86_400) {
        bail!("--ttl {s:?}: must be between 1 s and 7 days");
    }
    Ok(ttl)
}

async fn limits(state: AppState, command: LimitsCommand) -> anyhow::Result<()> {
    use ballast::ratelimit::{Override, PolicyName, Subject};
    let parse = |policy: &str, subject: &str| -> anyhow::Result<(PolicyName, Subject)> {
        let p = PolicyName::parse(policy)
            .filter(|p| *p != PolicyName::AuthFailures)
            .ok_or_else(|| anyhow::anyhow!("--policy {policy:?}: expected anonymous, key or tenant_writes"))?;
        let s: Subject = subject.parse().map_err(|e: String| anyhow::anyhow!("--subject: {e}"))?;
        Ok((p, s))
    };
    match command {
        LimitsCommand::Override { policy, subject, limit, allow, ttl, json } => {
            let (p, s) = parse(&policy, &subject)?;
            let ttl = parse_ttl(&ttl)?;
            let what = if allow { Override::Allow } else { Override::Limit(limit.unwrap_or(0)) };
            let until = state.limiter.set_override(p, &s, what, ttl).await?;
            let until = chrono::DateTime::from_timestamp_millis(until).unwrap_or_default();
            let mut conn = state.system_pool.0.acquire().await?;
            let params = serde_json::json!({"policy": p.as_str(), "subject": s.to_string(), "override": what, "until": until});
            ballast::auth::store::audit(&mut conn, None, &actor(), "limits.override", params.clone()).await?;
            if json {
                println!("{params}");
            } else {
                println!("override set: {} for {} → {:?} until {} (expires by itself)", p.as_str(), s, what, until.to_rfc3339());
            }
        }
        LimitsCommand::Revert { policy, subject } => {
            let (p, s) = parse(&policy, &subject)?;
            let existed = state.limiter.revert_override(p, &s).await?;
            let mut conn = state.system_pool.0.acquire().await?;
            let params = serde_json::json!({"policy": p.as_str(), "subject": s.to_string(), "existed": existed});
            ballast::auth::store::audit(&mut conn, None, &actor(), "limits.revert", params).await?;
            println!("{}", if existed { "override removed" } else { "no override was set" });
        }
        LimitsCommand::Blocks { minutes, json } => {
            let top = state.limiter.top_blocked(minutes).await?;
            if json {
                let rows: Vec<_> = top.iter().map(|(k, n)| serde_json::json!({"policy_subject": k, "blocks": n})).collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else if top.is_empty() {
                println!("no blocks in the last {minutes} min");
            } else {
                println!("{:<70} BLOCKS", "POLICY|SUBJECT");
                for (k, n) in top.iter().take(50) {
                    println!("{k:<70} {n}");
                }
            }
        }
    }
    Ok(())
}

fn parse_instant(raw: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| anyhow::anyhow!("--as-of {raw:?}: expected 2026-12-01 or an RFC 3339 time"))?;
    Ok(day.and_hms_opt(23, 59, 59).map(|t| t.and_utc()).unwrap_or_default())
}

#[derive(serde::Serialize, sqlx::FromRow)]
struct OutboxRow {
    id: uuid::Uuid,
    tenant_id: uuid::Uuid,
    template: String,
    to_address: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn emails(state: AppState, command: EmailsCommand) -> anyhow::Result<()> {
    // System pool: the outbox is looked at across tenants by operators.
    let pool = &state.system_pool.0;
    match command {
        EmailsCommand::List { status, limit, json } => {
            if let Some(s) = &status
                && !["pending", "sent", "dead"].contains(&s.as_str())
            {
                bail!("--status {s:?}: expected pending, sent or dead");
            }
            let rows: Vec<OutboxRow> = sqlx::query_as(
                "SELECT id, tenant_id, template, to_address, status, attempts, last_error, created_at, sent_at FROM email_outbox
                 WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC LIMIT $2",
            )
            .bind(&status)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{:<36} {:<18} {:<8} {:>8} {:<25} LAST ERROR", "ID", "TEMPLATE", "STATUS", "ATTEMPTS", "CREATED");
                for r in rows {
                    println!(
                        "{:<36} {:<18} {:<8} {:>8} {:<25} {}",
                        r.id,
                        r.template,
                        r.status,
                        r.attempts,
                        r.created_at.to_rfc3339(),
                        r.last_error.unwrap_or_default()
                    );
                }
            }
        }
        EmailsCommand::Redrive { dead, execute } => {
            let statuses: Vec<&str> = if dead { vec!["pending", "dead"] } else { vec!["pending"] };
            let rows: Vec<(uuid::Uuid, uuid::Uuid)> =
                sqlx::query_as("SELECT id, tenant_id FROM email_outbox WHERE status = ANY($1) ORDER BY created_at")
                    .bind(&statuses)
                    .fetch_all(pool)
                    .await?;
            if !execute {
                println!("would re-drive {} emails ({}); run again with --execute", rows.len(), statuses.join(" + "));
                return Ok(());
            }
            let mut conn = pool.acquire().await?;
            ballast::auth::store::audit(&mut conn, None, &actor(), "emails.redrive", serde_json::json!({"dead": dead, "rows": rows.len()})).await?;
            for (id, tenant) in &rows {
                sqlx::query("UPDATE email_outbox SET status = 'pending' WHERE id = $1 AND status = 'dead'").bind(id).execute(pool).await?;
                // A fresh job without the idempotency key: the first job for this row used it.
                let mut req = ballast::queue::EnqueueRequest::new(ballast::email::JOB_KIND, serde_json::json!({"outbox_id": id}));
                req.tenant = Some(TenantId(*tenant));
                state.queue.enqueue(req).await?;
            }
            println!("re-drove {} emails", rows.len());
        }
    }
    Ok(())
}

async fn cache(state: AppState, command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Warm { json } => {
            let r = ballast::cache::warm::run(state.warm_sources()).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "warmed: catalogue {}, flags {}, entitlements of {} tenants in {} batches: {} stored, {} busy elsewhere, {} invalidated meanwhile",
                    r.catalogue.stored, r.flags.stored, r.tenants, r.batches, r.entitlements.stored, r.entitlements.busy, r.entitlements.lost
                );
            }
        }
        CacheCommand::Reshape { execute, json } => {
            // The admin job behind runbooks/cache-reshape.md, run here and audited.
            let r = ballast::runbook::run_here(&state, &Registry::standard(), "cache.reshape", execute, serde_json::json!({}), &actor(), Progress::terminal()).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{:<14} {:>6} {:>10} {:>10} {:>10}", "FAMILY", "SHAPE", "CURRENT", "OLD", "DELETED");
                for f in r["families"].as_array().into_iter().flatten() {
                    println!("{:<14} {:>6} {:>10} {:>10} {:>10}", f["family"].as_str().unwrap_or("?"), f["shape"], f["current"], f["old"], f["deleted"]);
                }
                if !execute {
                    println!("dry run: nothing changed; run again with --execute to warm and remove the old versions");
                }
            }
        }
    }
    Ok(())
}

async fn flags(state: AppState, command: FlagsCommand) -> anyhow::Result<()> {
    match command {
        FlagsCommand::List { json } => {
            // System pool: operators see every flag (the table is global).
            let all = ballast::flags::list(&state.system_pool.0).await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                println!("{:<32} {:<8} {:>8} {:<25} DESCRIPTION", "FLAG", "ENABLED", "ROLLOUT", "UPDATED");
                for f in all {
                    println!("{:<32} {:<8} {:>7}% {:<25} {}", f.name, f.enabled, f.rollout_percent, f.updated_at.to_rfc3339(), f.description);
                }
            }
        }
        FlagsCommand::Set { name, on, off, rollout, description, json } => {
            let enabled = if on { Some(true) } else if off { Some(false) } else { None };
            let change = ballast::flags::FlagChange { enabled, rollout_percent: rollout, description };
            let f = ballast::flags::set(&state.system_pool, &state.cache, &name, change, &actor()).await?;
            if json {
                println!("{}", serde_json::to_string(&f)?);
            } else {
                println!("{}: {} at {}% of tenants", f.name, if f.enabled { "on" } else { "off" }, f.rollout_percent);
            }
        }
    }
    Ok(())
}

fn print_slo_status(statuses: &[ballast::slo::evaluate::SloStatus]) {
    let minutes = |m: i64| if m % 1440 == 0 { format!("{}d", m / 1440) } else if m % 60 == 0 { format!("{}h", m / 60) } else { format!("{m}m") };
    println!("{:<28} {:>8} {:>7} {:>10} {:>12} {:>10}  {:<10} {:<10}", "SLO", "TARGET", "WINDOW", "SLI", "BUDGET LEFT", "EVENTS", "PAGE", "TICKET");
    for s in statuses {
        let alert = |sev| s.alerts.iter().find(|a| a.severity == sev).map_or("-", |a| a.state.as_str());
        println!(
            "{:<28} {:>7.3}% {:>7} {:>9.3}% {:>11.1}% {:>10}  {:<10} {:<10}",
            s.name,
            s.target * 100.0,
            minutes(s.window_minutes),
            s.sli * 100.0,
            s.budget_remaining * 100.0,
            s.window.valid,
            alert(ballast::slo::Severity::Page),
            alert(ballast::slo::Severity::Ticket)
        );
        for r in &s.rules {
            println!(
                "    {:<6} {:>5.1}x over {:>4} and {:>4}: burn {:>7.2} / {:>7.2}{}",
                r.rule.severity.as_str(),
                r.rule.factor,
                minutes(r.rule.long_minutes),
                minutes(r.rule.short_minutes),
                r.long_burn,
                r.short_burn,
                if r.firing { "  FIRING" } else { "" }
            );
        }
    }
}

/// `--param k=v` pairs as a JSON object: values that parse as JSON stay typed.
fn runbook_params(pairs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--param {pair:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
        out.insert(k.trim().to_owned(), value);
    }
    Ok(serde_json::Value::Object(out))
}

async fn runbook(settings: Settings, command: RunbookCommand) -> anyhow::Result<()> {
    let dir = settings.runbooks_dir.clone();
    match command {
        RunbookCommand::List { json } => {
            let pages = ballast::runbook::pages(&dir)?;
            if json {
                println!("{}", serde_json::to_string(&pages)?);
            } else {
                println!("{:<28} {:<20} TITLE", "NAME", "ADMIN JOB");
                for p in pages {
                    println!("{:<28} {:<20} {}", p.name, p.admin_job, p.title);
                }
            }
        }
        RunbookCommand::Show { name } => print!("{}", ballast::runbook::page(&dir, &name)?.text),
        RunbookCommand::Run { name, execute, params, enqueue, json } => {
            let page = ballast::runbook::page(&dir, &name)?;
            let state = AppState::build(settings)?;
            let policy = state
                .queue
                .catalogue()
                .iter()
                .find(|p| p.kind.as_str() == page.admin_job)
                .ok_or_else(|| anyhow::anyhow!("{name}: its admin job {} is not in the catalogue (jobs/)", page.admin_job))?;
            if policy.runbook.as_deref() != Some(name.as_str()) {
                bail!("{name}: jobs/{}.toml does not name this runbook", page.admin_job);
            }
            let params = runbook_params(&params)?;
            if enqueue {
                let payload = serde_json::json!({"execute": execute, "actor": actor(), "params": params});
                let done = state.queue.enqueue(ballast::queue::EnqueueRequest::new(page.admin_job.as_str(), payload)).await?;
                println!("queued {} job {} on the fleet (ballast jobs show {} for its outcome)", page.admin_job, done.id, done.id);
                return Ok(());
            }
            let registry = Registry::standard();
            let print = |label: &str, report: &serde_json::Value| -> anyhow::Result<()> {
                if json {
                    println!("{}", serde_json::to_string(report)?);
                } else {
                    println!("== {label} ==\n{}", serde_json::to_string_pretty(report)?);
                }
                Ok(())
            };
            if execute && !json {
                // What it will touch, then the act.
                let dry = ballast::runbook::run_here(&state, &registry, &page.admin_job, false, params.clone(), &actor(), Progress::terminal()).await?;
                print(&format!("{} (dry run: what --execute will touch)", page.admin_job), &dry)?;
            }
            let report = ballast::runbook::run_here(&state, &registry, &page.admin_job, execute, params, &actor(), Progress::terminal()).await?;
            eprintln!();
            print(&format!("{}{}", page.admin_job, if execute { " (executed)" } else { " (dry run; --execute to act)" }), &report)?;
        }
    }
    Ok(())
}

async fn loadtest(settings: Settings, command: Option<LoadtestCommand>, args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    use ballast::loadtest;
    let state = AppState::build(settings)?;
    if let Some(LoadtestCommand::History { level, chart, json }) = command {
        // System pool: runs are the fleet's record.
        let runs = loadtest::history(&state.system_pool.0, level.as_deref()).await?;
        if let Some(dir) = chart.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        loadtest::chart::history_chart(&chart, &runs).map_err(|e| anyhow::anyhow!("writing {}: {e}", chart.display()))?;
        if json {
            println!("{}", serde_json::to_string(&runs)?);
        } else {
            println!("{:<26} {:<8} {:>7} {:>12} {:>9} {:>9} {:<6} TARGET", "STARTED", "LEVEL", "RATE", "ANSWERS/S", "P50 ms", "P99 ms", "PASS");
            for r in &runs {
                println!(
                    "{:<26} {:<8} {:>7} {:>12.1} {:>9.2} {:>9.2} {:<6} {}",
                    r.started_at.to_rfc3339(), r.level, r.rate, r.throughput, r.p50_ms, r.p99_ms, r.passed, r.target
                );
            }
            println!("chart: {}", chart.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(name), Some(target)) = (args.level, args.target) else {
        bail!("give --level and --target (or `ballast loadtest history`)");
    };
    let config = loadtest::LoadtestConfig::load(&state.settings.loadtest_file)?;
    let mut level = config.levels.get(&name).cloned().ok_or_else(|| {
        anyhow::anyhow!("no level {name:?} in {}; defined: {}", state.settings.loadtest_file.display(), config.levels.keys().cloned().collect::<Vec<_>>().join(", "))
    })?;
    if let Some(d) = args.duration {
        level.duration = humantime::parse_duration(&d).map_err(|e| anyhow::anyhow!("--duration {d:?}: {e}"))?;
    }
    if let Some(r) = args.rate {
        level.rate = r.max(1);
    }
    let report = loadtest::run(&name, &level, &target, state.settings.loadtest_key.as_ref()).await?;
    let id = loadtest::store(&state.system_pool.0, &report).await?;
    let (json_path, svg_path) = loadtest::write_report(&args.out, &report)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let s = report.statuses;
        println!("load test {name} against {target}: {} requests at {}/s over {:.0} s (run {id})", report.sent, report.rate, report.duration_secs);
        println!("  latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms (from each request's scheduled time)", report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms);
        println!("  answers/s {:.1}; 2xx/3xx {}  429 {}  other 4xx {}  5xx {}  no answer {}  not sent (client full) {}", report.throughput, s.ok, s.limited, s.client_error, s.server_error, s.failed, report.dropped);
        println!("  {}: {}", if report.passed { "PASS" } else { "FAIL" }, report.verdict);
        println!("  report {}  chart {}", json_path.display(), svg_path.display());
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
