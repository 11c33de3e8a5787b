//! `ballast dev`: trying Ballast on one machine. `ballast dev stripe serve` runs the Stripe
//! simulator the tests use as a local Stripe (`./deploy/dev.sh up` starts it when no Stripe
//! key is configured); the other `dev stripe` commands act on it as a customer or the
//! Dashboard would: a checkout, a saved or declining card, the test clock. `ballast dev mail
//! serve` catches the fleet's email (started by `up` when no mail server is configured).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use ballast::config::Settings;
use ballast::devstripe::{DevOptions, StripeSim};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub(super) enum DevCommand {
    /// A local Stripe for a machine with no Stripe access (the simulator the tests use).
    Stripe {
        #[command(subcommand)]
        command: DevStripeCommand,
    },
    /// A local mail catcher (the SMTP server the tests use).
    Mail {
        #[command(subcommand)]
        command: DevMailCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DevMailCommand {
    /// Catch every email the fleet sends until Ctrl-C: each is printed (recipient, subject) and
    /// kept as a .eml file. Point the fleet at it with BALLAST_SMTP_HOST=127.0.0.1,
    /// BALLAST_SMTP_PORT and BALLAST_SMTP_SECURITY=none.
    Serve {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:2525")]
        listen: SocketAddr,
        /// Where each message is written.
        #[arg(long, env = "BALLAST_DEV_MAIL_DIR", default_value = ".ballast/mail")]
        dir: std::path::PathBuf,
    },
    /// The messages caught so far, newest first: file, recipient, subject.
    List {
        /// The catcher's folder.
        #[arg(long, env = "BALLAST_DEV_MAIL_DIR", default_value = ".ballast/mail")]
        dir: std::path::PathBuf,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Wait (up to 60 s) until at least this many messages are caught: the fleet sends
        /// email from its queue, a moment after what caused it.
        #[arg(long, default_value_t = 0)]
        at_least: usize,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DevStripeCommand {
    /// Serve the local Stripe until Ctrl-C: the API Ballast calls (point STRIPE_API_BASE at it)
    /// and every event it emits delivered to the fleet, signed with STRIPE_WEBHOOK_SECRET and
    /// retried until the fleet accepts it.
    Serve {
        /// Where the API listens: a loopback address unless --allow-remote (anyone who reaches
        /// it can create customers and make Stripe-signed events).
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: SocketAddr,
        /// Listen on a non-loopback address (a shared test box; never a reachable one).
        #[arg(long)]
        allow_remote: bool,
        /// Keep the local Stripe's customers, subscriptions, invoices and clock in this file
        /// across restarts (dev.sh up uses .ballast/dev-stripe.json); without it a restart
        /// forgets them while the fleet's database still names them.
        #[arg(long)]
        state: Option<std::path::PathBuf>,
        /// The fleet's webhook route.
        #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/stripe")]
        webhook_url: String,
    },
    /// Complete a Checkout for a customer (made by POST /v1/tenants or `ballast tenants
    /// create`): a subscription starts, with a trial if asked, and its events reach the fleet.
    /// Prints the subscription's id once the fleet has taken the events in (see --no-wait).
    Checkout {
        /// The customer: its id (cus_…), or its tenant's id or external id.
        #[arg(long)]
        customer: String,
        /// The price: price_starter_monthly or price_pro_monthly (policy/plans.toml).
        #[arg(long, default_value = "price_starter_monthly")]
        price: String,
        /// A free trial of this many days (1 to 730).
        #[arg(long)]
        trial_days: Option<i64>,
        /// Return at once instead of waiting until the fleet has taken in the events this causes.
        #[arg(long)]
        no_wait: bool,
    },
    /// Move the test clock: trial ends, renewals, retries and cancels happen on the way, each
    /// at its own time, and their events reach the fleet.
    Advance {
        /// Days to move.
        #[arg(long, default_value_t = 0)]
        days: i64,
        /// Hours to move (a renewal's invoice is finalized and charged an hour after it is made).
        #[arg(long, default_value_t = 0)]
        hours: i64,
        /// Return at once instead of waiting until the fleet has taken in the events this causes.
        #[arg(long)]
        no_wait: bool,
    },
    /// Save a working card as the customer's default, or make their card decline from now on
    /// (--declining) or pay again (--paying).
    Card {
        /// The customer: its id (cus_…), or its tenant's id or external id.
        #[arg(long)]
        customer: String,
        /// Every payment from now on is declined.
        #[arg(long, conflicts_with = "paying")]
        declining: bool,
        /// Payments succeed again.
        #[arg(long)]
        paying: bool,
        /// Return at once instead of waiting until the fleet has taken in the events this causes.
        #[arg(long)]
        no_wait: bool,
    },
    /// The billing meter events the local Stripe accepted (what the usage flush reported):
    /// identifier, event name, customer, value. Compare with `ballast usage ledger`.
    MeterEvents {
        /// Only this customer's: its id (cus_…), or its tenant's id or external id.
        #[arg(long)]
        customer: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// One `/_dev/` command to the local Stripe at STRIPE_API_BASE; its answer.
async fn dev_command(settings: &Settings, path: &str, body: Value) -> anyhow::Result<Value> {
    let url = format!("{}/_dev/{path}", settings.stripe_api_base.trim_end_matches('/'));
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let resp = http.post(&url).json(&body).send().await.with_context(|| format!("{url}: is `ballast dev stripe serve` running there? (STRIPE_API_BASE)"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url}: {status}: {}", answer["error"]["message"].as_str().unwrap_or("no explanation"));
    }
    Ok(answer)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

pub(super) async fn dev(settings: Settings, command: DevCommand, json: bool) -> anyhow::Result<()> {
    let stripe = match command {
        DevCommand::Stripe { command } => command,
        DevCommand::Mail { command: DevMailCommand::Serve { listen, dir } } => {
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
            let _catcher = ballast::devmail::SmtpServer::on(listener, Some(dir.clone()))?;
            println!("ballast: catching mail on {listen} into {}", dir.display());
            println!("set BALLAST_SMTP_HOST={} BALLAST_SMTP_PORT={} BALLAST_SMTP_SECURITY=none for the fleet", listen.ip(), listen.port());
            stop_signal().await;
            return Ok(());
        }
        DevCommand::Mail { command: DevMailCommand::List { dir, limit, at_least } } => {
            let deadline = tokio::time::Instant::now() + TAKE_IN_WAIT;
            let read = || ballast::devmail::read_folder(&dir).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(Vec::new()) } else { Err(e) });
            let mut caught = read().with_context(|| format!("reading {} (BALLAST_DEV_MAIL_DIR)", dir.display()))?;
            while caught.len() < at_least {
                if tokio::time::Instant::now() > deadline {
                    bail!("{} messages caught in {} after {} s, not {at_least}: is the fleet's BALLAST_SMTP_HOST this catcher? (`ballast emails list` shows the outbox)", caught.len(), dir.display(), TAKE_IN_WAIT.as_secs());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                caught = read()?;
            }
            caught.reverse();
            let total = caught.len();
            let rows: Vec<Value> = caught
                .iter()
                .take(limit)
                .map(|(path, m)| json!({"file": path.display().to_string(), "to": m.header("To"), "subject": m.header("Subject"), "date": m.header("Date")}))
                .collect();
            if json {
                println!("{}", Value::Array(rows));
            } else {
                let cells = rows.iter().map(|r| ["file", "to", "subject"].iter().map(|k| r[*k].as_str().unwrap_or("-").to_owned()).collect());
                println!("{}", super::render::table(&["file", "to", "subject"], cells));
                if let Some(note) = super::render::more(rows.len(), total) {
                    println!("{note}");
                }
            }
            return Ok(());
        }
    };
    match stripe {
        DevStripeCommand::Serve { listen, webhook_url, allow_remote, state } => {
            if !listen.ip().is_loopback() && !allow_remote {
                bail!("--listen {listen} is not a loopback address: the local Stripe signs events the fleet trusts, so anyone who reaches it could forge them. Use 127.0.0.1, or pass --allow-remote on a private test network");
            }
            let Some(secret) = settings.stripe_webhook_secrets.first().cloned() else {
                bail!("STRIPE_WEBHOOK_SECRET is not set: the fleet could not verify what the local Stripe sends");
            };
            let shutdown = tokio_util::sync::CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                stop_signal().await;
                on_signal.cancel();
            });
            println!("ballast: local Stripe on http://{listen}/ delivering to {webhook_url}");
            println!("set STRIPE_API_BASE=http://{listen}/ and any STRIPE_SECRET_KEY for the fleet");
            StripeSim::serve(DevOptions { listen, webhook_url, webhook_secret: secret, state_file: state }, shutdown).await?;
        }
        DevStripeCommand::Checkout { customer, price, trial_days, no_wait } => {
            let customer = customer_of(&settings, &customer).await?;
            let answer = dev_command(&settings, "checkout", json!({"customer": customer, "price": price, "trial_days": trial_days})).await?;
            let taken = taken_in(&settings, &answer, no_wait).await?;
            if json {
                println!("{}", json!({"subscription": answer["subscription"], "events": answer["events"], "taken_in": taken}));
            } else {
                println!("{}", answer["subscription"].as_str().unwrap_or_default());
            }
        }
        DevStripeCommand::Advance { days, hours, no_wait } => {
            let answer = dev_command(&settings, "advance", json!({"days": days, "hours": hours})).await?;
            let taken = taken_in(&settings, &answer, no_wait).await?;
            let now = answer["now"].as_i64().and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()).unwrap_or_default();
            if json {
                println!("{}", json!({"now": now, "events": answer["events"], "taken_in": taken}));
            } else {
                println!("the local Stripe's clock is at {now}");
            }
        }
        DevStripeCommand::MeterEvents { customer, limit } => {
            let customer = match customer {
                Some(named) => Some(customer_of(&settings, &named).await?),
                None => None,
            };
            let answer = dev_command(&settings, "meter-events", json!({"customer": customer})).await?;
            let events = answer["meter_events"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", json!({"meter_events": events}));
            } else if events.is_empty() {
                println!("no meter events yet (the usage flush reports each minute)");
            } else {
                let shown = events.iter().take(limit.max(1));
                let cells = shown.map(|e| ["identifier", "event_name", "customer", "value"].iter().map(|k| e[*k].as_str().map_or_else(|| e[*k].to_string(), str::to_owned)).collect());
                println!("{}", super::render::table(&["identifier", "event", "customer", "value"], cells));
                if let Some(note) = super::render::more(limit.max(1).min(events.len()), events.len()) {
                    println!("{note}");
                }
            }
        }
        DevStripeCommand::Card { customer, declining, paying, no_wait } => {
            let customer = customer_of(&settings, &customer).await?;
            let change = if declining { Some(true) } else if paying { Some(false) } else { None };
            let answer = dev_command(&settings, "card", json!({"customer": customer, "declining": change})).await?;
            let taken = taken_in(&settings, &answer, no_wait).await?;
            if json {
                println!("{}", json!({"customer": customer, "events": answer["events"], "taken_in": taken}));
            } else {
                let what = match change { Some(true) => "declines every payment from now on", Some(false) => "pays again", None => "has a working card as its default" };
                println!("{customer} {what}");
            }
        }
    }
    Ok(())
}

/// A customer id as given, or the customer of the tenant named.
async fn customer_of(settings: &Settings, named: &str) -> anyhow::Result<String> {
    if named.starts_with("cus_") {
        return Ok(named.to_owned());
    }
    let (_, system) = ballast::db::pools(settings)?;
    let tenant = super::args::resolve_tenant(&system, named).await?;
    tenant.stripe_customer_id.ok_or_else(|| anyhow::anyhow!("tenant {named:?} has no Stripe customer yet (POST /v1/tenants makes it)"))
}

/// How long `dev stripe` commands wait for the fleet.
const TAKE_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until the fleet has accepted every event a `/_dev/` command caused and applied (or
/// ignored) each; true when it did. A newcomer's next command then sees their effect.
async fn taken_in(settings: &Settings, answer: &Value, no_wait: bool) -> anyhow::Result<bool> {
    let ids: Vec<String> = answer["events"].as_array().into_iter().flatten().filter_map(|e| e.as_str().map(str::to_owned)).collect();
    if no_wait || ids.is_empty() {
        return Ok(false);
    }
    let deadline = tokio::time::Instant::now() + TAKE_IN_WAIT;
    let pause = std::time::Duration::from_millis(100);
    loop {
        let left = dev_command(settings, "undelivered", json!({"ids": ids})).await?;
        if left["undelivered"].as_array().is_none_or(Vec::is_empty) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the fleet has not accepted {} of {} events in {} s: is `ballast serve` running at the local Stripe's --webhook-url? (--no-wait to not wait)", left["undelivered"].as_array().map_or(0, Vec::len), ids.len(), TAKE_IN_WAIT.as_secs());
        }
        tokio::time::sleep(pause).await;
    }
    let (_, system) = ballast::db::pools(settings)?;
    loop {
        let mut pending = 0;
        for id in &ids {
            let row = ballast::stripe::inbox::load(&system, &ballast::newtypes::EventId(id.clone())).await?;
            if !row.is_some_and(|r| r.status().is_done()) {
                pending += 1;
            }
        }
        if pending == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{pending} of {} events are not applied after {} s: `ballast stripe-events list --status failed` shows why", ids.len(), TAKE_IN_WAIT.as_secs());
        }
        tokio::time::sleep(pause).await;
    }
}
