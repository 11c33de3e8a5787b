//! `ballast overrides`: an operator's exceptions to what billing grants one tenant — a feature
//! granted or revoked, a feature's limit, a usage metric's monthly limit — each with a reason
//! and an expiry (or none), audited; entitlement reads show them as source `override`.

use anyhow::bail;
use ballast::auth::operators::Role;
use ballast::billing::overrides::{self, NewOverride, OverrideKind};
use ballast::state::AppState;
use clap::Subcommand;

use super::args::{actor, require, resolve_tenant};

#[derive(Debug, Subcommand)]
pub(super) enum OverridesCommand {
    /// Set an override (it replaces the tenant's live one for the same feature or metric).
    /// Exactly one of --grant, --revoke, --feature-limit, --usage-limit.
    Set {
        /// The tenant (its id or your app's external id).
        #[arg(long)]
        tenant: String,
        /// Turn this feature on, whatever the plan says.
        #[arg(long, value_name = "FEATURE")]
        grant: Option<String>,
        /// Turn this feature off, whatever the plan says.
        #[arg(long, value_name = "FEATURE")]
        revoke: Option<String>,
        /// Set a feature's numeric limit: FEATURE=N.
        #[arg(long, value_name = "FEATURE=N")]
        feature_limit: Option<String>,
        /// Set a usage metric's monthly limit: METRIC=N (a sales-assist deal's higher quota).
        #[arg(long, value_name = "METRIC=N")]
        usage_limit: Option<String>,
        /// Why (kept with the override and in the audit log; 3 to 500 characters).
        #[arg(long)]
        reason: String,
        /// How long it lasts (14d, 12h); omit it and --until for no expiry.
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
        lasts: Option<String>,
        /// When it ends (RFC 3339, or a day: its last second, UTC).
        #[arg(long)]
        until: Option<String>,
    },
    /// List a tenant's live overrides (with --all, the ended ones too, newest first).
    List {
        /// The tenant (its id or your app's external id).
        #[arg(long)]
        tenant: String,
        /// Include revoked, replaced and expired overrides.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// End a live override now.
    Revoke {
        /// The tenant (its id or your app's external id).
        #[arg(long)]
        tenant: String,
        /// The override's id (from `ballast overrides list`).
        id: uuid::Uuid,
    },
}

fn pair(raw: &str, flag: &str) -> anyhow::Result<(String, i64)> {
    let (name, n) = raw.split_once('=').ok_or_else(|| anyhow::anyhow!("{flag} {raw:?}: expected NAME=N"))?;
    let n: i64 = n.trim().parse().map_err(|_| anyhow::anyhow!("{flag} {raw:?}: {n:?} is not a whole number"))?;
    Ok((name.trim().to_owned(), n))
}

pub(super) async fn overrides_command(state: AppState, command: OverridesCommand, json: bool) -> anyhow::Result<()> {
    let pool = &state.system_pool;
    match command {
        OverridesCommand::Set { tenant, grant, revoke, feature_limit, usage_limit, reason, lasts, until } => {
            require(Role::Operator)?;
            let chosen = [grant.is_some(), revoke.is_some(), feature_limit.is_some(), usage_limit.is_some()].iter().filter(|b| **b).count();
            if chosen != 1 {
                bail!("give exactly one of --grant, --revoke, --feature-limit, --usage-limit");
            }
            let (kind, target, value) = match (grant, revoke, feature_limit, usage_limit) {
                (Some(f), ..) => (OverrideKind::Grant, f, None),
                (_, Some(f), ..) => (OverrideKind::Revoke, f, None),
                (_, _, Some(raw), _) => pair(&raw, "--feature-limit").map(|(f, n)| (OverrideKind::FeatureLimit, f, Some(n)))?,
                (_, _, _, Some(raw)) => pair(&raw, "--usage-limit").map(|(m, n)| (OverrideKind::UsageLimit, m, Some(n)))?,
                _ => bail!("give exactly one of --grant, --revoke, --feature-limit, --usage-limit"),
            };
            let now = chrono::Utc::now();
            let expires_at = match (lasts, until) {
                (Some(d), _) => {
                    let d = humantime::parse_duration(d.trim()).map_err(|e| anyhow::anyhow!("--for {d:?}: {e} (e.g. 14d, 12h)"))?;
                    Some(now + chrono::Duration::from_std(d)?)
                }
                (_, Some(t)) => Some(super::args::parse_instant(&t)?),
                _ => None,
            };
            let tenant = resolve_tenant(pool, &tenant).await?;
            let new = NewOverride { kind, target: &target, value, reason: &reason, expires_at };
            let features: Vec<&str> = state.plans.features.keys().map(String::as_str).collect();
            let metrics: Vec<&str> = state.plans.metrics.keys().map(String::as_str).collect();
            overrides::check(&new, &features, &metrics, now)?;
            let row = overrides::set(pool, tenant.id, &new, &actor()).await?;
            ballast::billing::entitlements::invalidate(&state.cache, tenant.id).await;
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                let until = row.expires_at.map_or_else(|| "until revoked".to_owned(), |t| format!("until {}", t.format("%Y-%m-%d %H:%M UTC")));
                println!("override {} set for {}: {} {}{} {until}", row.id, tenant.name, row.kind, row.target, row.value.map(|v| format!(" = {v}")).unwrap_or_default());
            }
        }
        OverridesCommand::List { tenant, all, limit } => {
            let tenant = resolve_tenant(pool, &tenant).await?;
            let rows = overrides::list(pool, tenant.id, all, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                let when = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string());
                let cells = rows.iter().map(|o| {
                    let state = match (&o.ended_at, &o.ended_by) {
                        (Some(_), Some(by)) => format!("ended by {by}"),
                        (Some(_), None) => "ended".into(),
                        (None, _) => "live".into(),
                    };
                    vec![o.id.to_string(), o.kind.clone(), o.target.clone(), o.value.map(|v| v.to_string()).unwrap_or_default(), when(o.expires_at), state, o.created_by.clone(), o.reason.clone()]
                });
                println!("{}", super::render::table(&["id", "kind", "target", "value", "expires", "state", "set by", "reason"], cells));
            }
        }
        OverridesCommand::Revoke { tenant, id } => {
            require(Role::Operator)?;
            let tenant = resolve_tenant(pool, &tenant).await?;
            let row = overrides::revoke(pool, tenant.id, id, &actor()).await?;
            ballast::billing::entitlements::invalidate(&state.cache, tenant.id).await;
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                println!("override {} ({} {}) of {} revoked", row.id, row.kind, row.target, tenant.name);
            }
        }
    }
    Ok(())
}
