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
        #[arg(long, default_value = ".ballast/mail")]
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DevStripeCommand {
    /// Serve the local Stripe until Ctrl-C: the API Ballast calls (point STRIPE_API_BASE at it)
    /// and every event it emits delivered to the fleet, signed with STRIPE_WEBHOOK_SECRET and
    /// retried until the fleet accepts it.
    Serve {
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: SocketAddr,
        /// The fleet's webhook route.
        #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/stripe")]
        webhook_url: String,
    },
    /// Complete a Checkout for a customer (made by POST /v1/tenants or `ballast tenants
    /// create`): a subscription starts, with a trial if asked, and its events reach the fleet.
    Checkout {
        /// The customer (`stripe_customer_id` of the tenant).
        #[arg(long)]
        customer: String,
        /// The price: price_starter_monthly or price_pro_monthly (deploy/plans.toml).
        #[arg(long, default_value = "price_starter_monthly")]
        price: String,
        /// A free trial of this many days (1 to 730).
        #[arg(long)]
        trial_days: Option<i64>,
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
    },
    /// Save a working card as the customer's default, or make their card decline from now on
    /// (--declining) or pay again (--paying).
    Card {
        /// The customer.
        #[arg(long)]
        customer: String,
        /// Every payment from now on is declined.
        #[arg(long, conflicts_with = "paying")]
        declining: bool,
        /// Payments succeed again.
        #[arg(long)]
        paying: bool,
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

pub(super) async fn dev(settings: Settings, command: DevCommand) -> anyhow::Result<()> {
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
    };
    match stripe {
        DevStripeCommand::Serve { listen, webhook_url } => {
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
            StripeSim::serve(DevOptions { listen, webhook_url, webhook_secret: secret }, shutdown).await?;
        }
        DevStripeCommand::Checkout { customer, price, trial_days } => {
            let answer = dev_command(&settings, "checkout", json!({"customer": customer, "price": price, "trial_days": trial_days})).await?;
            println!("{}", answer["subscription"].as_str().unwrap_or_default());
        }
        DevStripeCommand::Advance { days, hours } => {
            let answer = dev_command(&settings, "advance", json!({"days": days, "hours": hours})).await?;
            let now = answer["now"].as_i64().and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()).unwrap_or_default();
            println!("the local Stripe's clock is at {now}");
        }
        DevStripeCommand::Card { customer, declining, paying } => {
            let change = if declining { Some(true) } else if paying { Some(false) } else { None };
            dev_command(&settings, "card", json!({"customer": customer, "declining": change})).await?;
        }
    }
    Ok(())
}
