//! `ballast keys`: API keys, created (shown once), listed and revoked; audited.

use ballast::newtypes::TenantId;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// The tenant the key acts for (its id or your app's external id); omit for a
        /// service-wide key (which names the tenant in each request's Ballast-Tenant header).
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated scopes: usage:write (reads too), usage:read, jobs:write (queue jobs,
        /// send email and webhook messages), entitlements:read, webhooks:write (outbound
        /// webhook endpoints and their deliveries), slo:write, tenants:read, tenants:write
        /// (slo:write and the tenants scopes for service-wide keys).
        #[arg(long)]
        scopes: String,
        /// A name for people ("billing-service prod").
        #[arg(long, default_value = "unnamed")]
        name: String,
    },
    /// List keys (never the keys themselves), newest first.
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (from `ballast keys list`).
        id: uuid::Uuid,
    },
}

pub(super) async fn keys(state: AppState, command: KeysCommand, json: bool) -> anyhow::Result<()> {
    use ballast::auth::store;
    match command {
        KeysCommand::Create { tenant, scopes, name } => {
            let scopes = ballast::auth::parse_scopes(&scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let tenant = match &tenant {
                Some(named) => Some(super::args::resolve_tenant(&state.system_pool, named).await?.id),
                None => None,
            };
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
        KeysCommand::List { tenant, limit } => {
            let rows = store::list(&state.system_pool, tenant).await?;
            let total = rows.len();
            let shown = &rows[..total.min(limit)];
            if json {
                println!("{}", serde_json::to_string(shown)?);
            } else {
                let cells = shown.iter().map(|k| {
                    let tenant = k.tenant_id.map(|t| t.to_string()).unwrap_or_else(|| "(service-wide)".into());
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    vec![k.id.to_string(), tenant, k.prefix.clone(), k.name.clone(), state.into(), k.scopes.join(",")]
                });
                println!("{}", super::render::table(&["id", "tenant", "prefix", "name", "state", "scopes"], cells));
                if let Some(note) = super::render::more(shown.len(), total) {
                    println!("{note}");
                }
            }
        }
        KeysCommand::Revoke { id } => {
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
