//! `ballast limits`: rate-limit blocks and per-subject overrides; audited.

use ballast::state::AppState;
use clap::Subcommand;

use super::args::{actor, parse_ttl};

#[derive(Debug, Subcommand)]
pub(super) enum LimitsCommand {
    /// Raise a limit (--limit N) or lift it (--allow) for one subject, for --ttl.
    Override {
        /// Policy: anonymous, key, tenant_writes, tenant_emails, tenant_webhooks.
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
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

pub(super) async fn limits(state: AppState, command: LimitsCommand, json: bool) -> anyhow::Result<()> {
    use ballast::ratelimit::{Override, PolicyName, Subject};
    let parse = |policy: &str, subject: &str| -> anyhow::Result<(PolicyName, Subject)> {
        let p = PolicyName::parse(policy)
            .filter(|p| *p != PolicyName::AuthFailures)
            .ok_or_else(|| anyhow::anyhow!("--policy {policy:?}: expected anonymous, key, tenant_writes, tenant_emails or tenant_webhooks"))?;
        let s: Subject = subject.parse().map_err(|e: String| anyhow::anyhow!("--subject: {e}"))?;
        Ok((p, s))
    };
    match command {
        LimitsCommand::Override { policy, subject, limit, allow, ttl } => {
            let (p, s) = parse(&policy, &subject)?;
            let ttl = parse_ttl(&ttl)?;
            let what = if allow { Override::Allow } else { Override::Limit(limit.unwrap_or(0)) };
            let until = state.limiter.set_override(p, &s, what, ttl).await?;
            let until = chrono::DateTime::from_timestamp_millis(until).unwrap_or_default();
            let mut conn = state.system_pool.0.acquire().await?;
            let params = serde_json::json!({"policy": p.as_str(), "subject": s.to_string(), "override": what, "until": until});
            ballast::audit::record(&mut conn, None, &actor(), "limits.override", params.clone(), ballast::audit::Outcome::Ok).await?;
            if json {
                println!("{params}");
            } else {
                let shown = match what {
                    Override::Allow => "not limited".to_owned(),
                    Override::Limit(n) => format!("limit {n}"),
                };
                println!("override set: {} for {} → {shown} until {} (expires by itself)", p.as_str(), s, until.to_rfc3339());
            }
        }
        LimitsCommand::Revert { policy, subject } => {
            let (p, s) = parse(&policy, &subject)?;
            let existed = state.limiter.revert_override(p, &s).await?;
            let mut conn = state.system_pool.0.acquire().await?;
            let params = serde_json::json!({"policy": p.as_str(), "subject": s.to_string(), "existed": existed});
            ballast::audit::record(&mut conn, None, &actor(), "limits.revert", params.clone(), ballast::audit::Outcome::Ok).await?;
            if json {
                println!("{params}");
            } else {
                println!("{}", if existed { "override removed" } else { "no override was set" });
            }
        }
        LimitsCommand::Blocks { minutes, limit } => {
            let top = state.limiter.top_blocked(minutes).await?;
            if json {
                let rows: Vec<_> = top.iter().take(limit).map(|(k, n)| serde_json::json!({"policy_subject": k, "blocks": n})).collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else if top.is_empty() {
                println!("no blocks in the last {minutes} min");
            } else {
                let rows = top.iter().take(limit).map(|(k, n)| vec![k.to_string(), n.to_string()]);
                println!("{}", super::render::table(&["policy|subject", "blocks"], rows));
                if let Some(note) = super::render::more(limit.min(top.len()), top.len()) {
                    println!("{note}");
                }
            }
        }
    }
    Ok(())
}
