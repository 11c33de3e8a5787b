//! Command-line interface. Data output is a table for people or `--json` for machines.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use ballast::app::{self, AppState, Member};
use ballast::config::Settings;
use ballast::newtypes::TenantId;
use ballast::state::Registry;
use ballast::queue::worker::WorkerOptions;
use ballast::queue::EnqueueRequest;
use clap::{Parser, Subcommand};

mod args;
mod bench;
mod billing;
mod cache;
mod dev;
mod emails;
mod endpoints;
mod flags;
mod jobs;
mod api_keys;
mod limits;
mod loadtest;
mod maintenance;
mod migrate;
mod operators;
mod overrides;
mod render;
mod runbook;
mod secrets;
mod slo;
mod tenants;
mod stripe_events;

use args::parse_instant;
use bench::BenchCommand;
use billing::{UsageCommand, DunningCommand};
use cache::CacheCommand;
use dev::DevCommand;
use emails::EmailsCommand;
use endpoints::{DeliveriesCommand, EndpointsCommand};
use flags::FlagsCommand;
use jobs::JobsCommand;
use api_keys::KeysCommand;
use limits::LimitsCommand;
use loadtest::{LoadtestArgs, LoadtestCommand};
use maintenance::MaintenanceCommand;
use operators::OperatorsCommand;
use overrides::OverridesCommand;
use runbook::RunbookCommand;
use secrets::SecretsCommand;
use slo::SloCommand;
use tenants::TenantsCommand;
use stripe_events::StripeEventsCommand;

#[derive(Debug, Parser)]
#[command(
    name = "ballast",
    version = ballast::RELEASE,
    about = "Ballast: the worker fleet behind a growing SaaS (Stripe webhooks, dunning, usage, caches, SLOs).",
    long_about = "Ballast: the worker fleet behind a growing SaaS.\n\n\
        Settings come from the environment (DATABASE_URL, BALLAST_SYSTEM_DATABASE_URL, REDIS_URL, \
        BALLAST_*, OTEL_*), optionally from a TOML file named by BALLAST_CONFIG. \
        The job catalogue, runbooks and configuration files are built in; settings naming files \
        or folders (BALLAST_JOBS_DIR, BALLAST_PLANS_FILE, ...) replace them. \
        See deploy/ballast.example.toml for every setting.\n\n\
        Conventions: every command takes --json; commands that run an admin job or act in bulk \
        are a dry run unless --execute; lists show 50 rows unless --limit; exit status 0 when \
        all is well, 1 on an error, 3 when a report finds something failing."
)]
pub(crate) struct Cli {
    /// Print JSON (one document on standard output) instead of tables and summaries for people.
    #[arg(long, global = true)]
    json: bool,
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
    /// has no curl) and print its status and answer. Exit 0 when it answers 2xx, 3 otherwise.
    Probe {
        /// The path to GET on BALLAST_LISTEN.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// Apply pending database migrations as the owner role (BALLAST_OWNER_DATABASE_URL).
    ///
    /// A migration that a member of an older release would break on is a required stop: it is
    /// applied only while every live member (the roster in Redis) runs that release or later.
    /// Upgrading from before it, deploy that release to every member first.
    Migrate {
        /// Apply a required stop without reading the fleet's roster: only when no member runs
        /// at all (a cold upgrade, Redis not up yet).
        #[arg(long)]
        skip_fleet_check: bool,
    },
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
    },
    /// Inspect queues and dead letters (alone: the queue overview, as `jobs list`).
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
    },
    /// API keys for app services: create (printed once), list, revoke.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Operators, the people who run Ballast: add one with a role (viewer, operator, admin;
    /// its token printed once), list, disable, rotate. Admins only. A shell with
    /// BALLAST_OPERATOR_TOKEN runs every command as that operator (audited by name, held to
    /// its role); without one, as local:<user>.
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// A tenant's overrides of what billing grants: grant or revoke a feature, set a feature's
    /// limit or a usage metric's monthly limit, with a reason and an expiry; list; revoke.
    Overrides {
        #[command(subcommand)]
        command: OverridesCommand,
    },
    /// Tenants: create one with its Stripe customer (as POST /v1/tenants does), list, show.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Stripe events the webhook intake received: list them by status, type or tenant; show
    /// what one did. (Outbound webhooks are the app's: `POST /v1/webhook-endpoints`.)
    StripeEvents {
        #[command(subcommand)]
        command: StripeEventsCommand,
    },
    /// The former name of `stripe-events` (until 0.5.0): refused, naming the new one.
    #[command(hide = true)]
    Webhooks {
        /// Whatever followed it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Rate limits: temporary overrides (audited, expiring by themselves) and recent blocks.
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// Outbound webhook endpoints tenants registered, as their tenant sees them.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// Outbound webhook deliveries: an endpoint's log, one delivery's attempts, a re-send.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Secrets at rest: re-seal webhook signing secrets under a new key (audited; a dry run
    /// unless --execute).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Dunning: advance open cases by the policy (policy/dunning.toml).
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
    /// Maintenance services the scheduler's leader runs (sweeps, prunes, the lost-queue
    /// check): each one's last run, what it did, its error, whether it is overdue; or run one
    /// now. Alone: the status.
    Maintenance {
        #[command(subcommand)]
        command: Option<MaintenanceCommand>,
    },
    /// Service level objectives: SLI, budget left, burn per window pair, alert state.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Benchmarks (release build; figures for docs/performance.md, never a timed test).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Trying Ballast on one machine: a local Stripe (`dev stripe serve`) and its test clock.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

/// The command line, parsed (clap exits with its message on bad arguments and on --help).
pub(crate) fn parse() -> Cli {
    Cli::parse()
}

impl Cli {
    /// Whether this command runs a fleet member (whose logs go to a collector), rather than a
    /// command a person reads (whose logs are text unless BALLAST_LOG_FORMAT=json).
    pub(crate) fn runs_a_member(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}

pub(crate) async fn run(cli: Cli, mut settings: Settings) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    if !matches!(cli.command, Command::Serve { .. } | Command::Migrate { .. } | Command::Dev { .. }) {
        args::sign_in(&settings).await?;
    }
    match cli.command {
        Command::Serve { roles, listen } => {
            if let Some(addr) = listen {
                settings.listen = addr;
            }
            let roles = app::parse_roles(&roles)?;
            let state = AppState::build(settings)?;
            let member = Member::start(state, &roles, WorkerOptions::new(Registry::standard())).await?;
            if let Some(addr) = member.api_addr {
                let names = app::role_names(&roles);
                tracing::info!(message = "Ballast is listening.", addr = %addr, roles = %names);
                if json {
                    println!("{}", serde_json::json!({"listening": format!("http://{addr}"), "roles": roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()}));
                } else {
                    println!("ballast: listening on http://{addr} (roles: {names})");
                    println!("try: curl -s http://{addr}/readyz");
                }
            }
            member.run_until_signal().await;
        }
        Command::Probe { path } => return probe(&settings, &path, json).await,
        Command::Migrate { skip_fleet_check } => migrate::run(&settings, skip_fleet_check, json).await?,
        Command::Enqueue { kind, tenant, payload, idempotency_key } => {
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
                println!("not queued: idempotency key already used by job {}", done.id);
            } else {
                println!("queued {kind} job {}", done.id);
            }
        }
        Command::Jobs { command } => {
            let state = AppState::build(settings)?;
            jobs::jobs(state, command.unwrap_or(JobsCommand::List {}), json).await?;
        }
        Command::Bench { command } => bench::bench(settings, command, json).await?,
        Command::Dunning { command: DunningCommand::Run { as_of, tenant, execute } } => billing::dunning(settings, as_of, tenant, execute, json).await?,
        Command::Usage { command: UsageCommand::Flush { all } } => billing::usage_flush(settings, all, json).await?,
        Command::Usage { command: UsageCommand::Ledger { tenant, limit } } => billing::usage_ledger(settings, &tenant, limit, json).await?,
        Command::Emails { command } => emails::emails(AppState::build(settings)?, command, json).await?,
        Command::Cache { command } => cache::cache(AppState::build(settings)?, command, json).await?,
        Command::Runbook { command } => return runbook::runbook(settings, command, json).await,
        Command::Loadtest { command, run } => return loadtest::loadtest(settings, command, run, json).await,
        Command::Slo { command: SloCommand::Status { as_of } } => {
            let now = match as_of {
                None => chrono::Utc::now(),
                Some(raw) => parse_instant(&raw)?,
            };
            let state = AppState::build(settings)?;
            let statuses = ballast::slo::evaluate::run(&state.slo_deps(), now, false).await?;
            if json {
                println!("{}", serde_json::to_string(&statuses)?);
            } else {
                slo::print_slo_status(&statuses);
            }
            if statuses.iter().any(|s| s.rules.iter().any(|r| r.firing)) {
                return Ok(ExitCode::from(render::FOUND_FAILING));
            }
        }
        Command::Maintenance { command } => {
            return maintenance::maintenance(AppState::build(settings)?, command.unwrap_or(MaintenanceCommand::Status), json).await;
        }
        Command::Flags { command } => flags::flags(AppState::build(settings)?, command, json).await?,
        Command::Keys { command } => api_keys::keys(AppState::build(settings)?, command, json).await?,
        Command::Operators { command } => operators::operators_command(AppState::build(settings)?, command, json).await?,
        Command::Overrides { command } => overrides::overrides_command(AppState::build(settings)?, command, json).await?,
        Command::Tenants { command } => tenants::tenants(AppState::build(settings)?, command, json).await?,
        Command::Dev { command } => dev::dev(settings, command, json).await?,
        Command::StripeEvents { command } => stripe_events::stripe_events(AppState::build(settings)?, command, json).await?,
        Command::Webhooks { rest } => {
            anyhow::bail!("`ballast webhooks` was renamed `ballast stripe-events` in 0.2.0 and is gone: run `ballast stripe-events {}`", rest.join(" "))
        }
        Command::Limits { command } => limits::limits(AppState::build(settings)?, command, json).await?,
        Command::Endpoints { command } => endpoints::endpoints(AppState::build(settings)?, command, json).await?,
        Command::Deliveries { command } => endpoints::deliveries(AppState::build(settings)?, command, json).await?,
        Command::Secrets { command } => secrets::secrets(AppState::build(settings)?, command, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `ballast probe`: GET a path of this member's own listener and say what came back.
async fn probe(settings: &Settings, path: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}{path}");
    let answer = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build()?.get(&url).send().await;
    let (ok, status, body) = match answer {
        Ok(r) => {
            let status = r.status();
            (status.is_success(), Some(status.as_u16()), r.text().await.unwrap_or_default())
        }
        Err(e) => (false, None, e.to_string()),
    };
    if json {
        let body = serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::String(body));
        println!("{}", serde_json::json!({"url": url, "ok": ok, "status": status, "answer": body}));
    } else {
        let status = status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        println!("{url}: {status} {}", render::truncate(body.trim(), render::CELL_CHARS * 4));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(render::FOUND_FAILING) })
}
