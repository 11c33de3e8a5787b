//! Rate-limit policies, from a reviewed TOML file (`BALLAST_LIMITS_FILE`, default
//! policy/limits.toml). Every field has a default, so a missing file means the defaults.

use std::collections::HashMap;
use crate::assets::ConfigFile;
use std::time::Duration;

use serde::Deserialize;

use crate::newtypes::TenantId;

/// Errors reading the policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("limits file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("limits file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// One sliding window.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: u64,
}

impl Window {
    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

/// Failed credential checks per client IP, then a ban.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// Failures per window that trigger the ban.
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Ban length in seconds.
    pub ban_secs: u64,
}

/// Per-tenant limit on write routes, with per-tenant overrides.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantWrites {
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Tenant id → its own limit.
    #[serde(default)]
    pub per_tenant: HashMap<uuid::Uuid, u32>,
}

/// Per tenant, outbound webhooks: messages per window, and the bounds on what one tenant's
/// messages may cost the fleet (each overridable per tenant).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantWebhooks {
    /// Messages admitted per window (each fans out to at most `max_endpoints` deliveries).
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Tenant id → its own message limit.
    #[serde(default)]
    pub per_tenant: HashMap<uuid::Uuid, u32>,
    /// Endpoints one tenant may register.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints: u32,
    /// Tenant id → its own endpoint limit.
    #[serde(default)]
    pub max_endpoints_per_tenant: HashMap<uuid::Uuid, u32>,
    /// Bytes of deliveries not yet delivered (each delivery counts its message's body) one
    /// tenant may have: a new message that would pass it is refused until some are delivered.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: u64,
    /// Of a member's `webhook.deliver` slots, the most one tenant's deliveries may hold at
    /// once; the rest wait their turn without taking a slot.
    #[serde(default = "default_max_delivery_slots")]
    pub max_delivery_slots: u32,
}

fn default_max_endpoints() -> u32 {
    20
}

fn default_max_bytes_in_flight() -> u64 {
    64 * 1024 * 1024
}

fn default_max_delivery_slots() -> u32 {
    32
}

impl Default for TenantWebhooks {
    fn default() -> Self {
        Self {
            limit: 600,
            window_secs: 60,
            per_tenant: HashMap::new(),
            max_endpoints: default_max_endpoints(),
            max_endpoints_per_tenant: HashMap::new(),
            max_bytes_in_flight: default_max_bytes_in_flight(),
            max_delivery_slots: default_max_delivery_slots(),
        }
    }
}

/// Every policy.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Policies {
    /// Per client IP, for requests that present no valid credential.
    pub anonymous: Window,
    /// Per API key, every authenticated request.
    pub key: Window,
    /// Per tenant, write routes.
    pub tenant_writes: TenantWrites,
    /// Per tenant, emails app services send (`email.send` through `POST /v1/jobs`).
    pub tenant_emails: TenantWrites,
    /// Per tenant, outbound webhook messages and what they may cost.
    pub tenant_webhooks: TenantWebhooks,
    /// Per client IP, failed credential checks.
    pub auth_failures: Ban,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            anonymous: Window { limit: 60, window_secs: 60 },
            // App services send batches: 20 requests/s per key, sustained, is a lot of batches.
            key: Window { limit: 1200, window_secs: 60 },
            tenant_writes: TenantWrites { limit: 600, window_secs: 60, per_tenant: HashMap::new() },
            // A burst of sign-ups is fine; a loop mailing every customer is stopped within the hour.
            tenant_emails: TenantWrites { limit: 1000, window_secs: 3600, per_tenant: HashMap::new() },
            tenant_webhooks: TenantWebhooks::default(),
            auth_failures: Ban { limit: 5, window_secs: 60, ban_secs: 900 },
        }
    }
}

impl Policies {
    /// Parses policy TOML.
    pub fn parse(text: &str) -> Result<Self, String> {
        let p: Policies = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, limit, secs) in [
            ("anonymous", p.anonymous.limit, p.anonymous.window_secs),
            ("key", p.key.limit, p.key.window_secs),
            ("tenant_writes", p.tenant_writes.limit, p.tenant_writes.window_secs),
            ("tenant_emails", p.tenant_emails.limit, p.tenant_emails.window_secs),
            ("tenant_webhooks", p.tenant_webhooks.limit, p.tenant_webhooks.window_secs),
            ("auth_failures", p.auth_failures.limit, p.auth_failures.window_secs),
        ] {
            if limit == 0 || secs == 0 {
                return Err(format!("[{name}]: limit and window_secs must be at least 1"));
            }
        }
        let w = &p.tenant_webhooks;
        if w.max_endpoints == 0 || w.max_bytes_in_flight == 0 || w.max_delivery_slots == 0 {
            return Err("[tenant_webhooks]: max_endpoints, max_bytes_in_flight and max_delivery_slots must be at least 1".into());
        }
        if p.auth_failures.ban_secs == 0 {
            return Err("[auth_failures]: ban_secs must be at least 1".into());
        }
        Ok(p)
    }

    /// Loads the file (a file a setting names must exist).
    pub fn load(file: &ConfigFile) -> Result<Self, PolicyError> {
        let shown = file.shown();
        match file.read() {
            Ok(text) => Self::parse(&text).map_err(|message| PolicyError::Invalid { path: shown, message }),
            Err(source) => Err(PolicyError::Read { path: shown, source }),
        }
    }

    /// The write window of `tenant`.
    pub fn tenant_writes_for(&self, tenant: TenantId) -> Window {
        let limit = self.tenant_writes.per_tenant.get(&tenant.0).copied().unwrap_or(self.tenant_writes.limit);
        Window { limit, window_secs: self.tenant_writes.window_secs }
    }

    /// The outbound webhook message window of `tenant`.
    pub fn tenant_webhooks_for(&self, tenant: TenantId) -> Window {
        let w = &self.tenant_webhooks;
        Window { limit: w.per_tenant.get(&tenant.0).copied().unwrap_or(w.limit), window_secs: w.window_secs }
    }

    /// How many webhook endpoints `tenant` may register.
    pub fn max_endpoints_for(&self, tenant: TenantId) -> u32 {
        let w = &self.tenant_webhooks;
        w.max_endpoints_per_tenant.get(&tenant.0).copied().unwrap_or(w.max_endpoints)
    }

    /// The email window of `tenant`.
    pub fn tenant_emails_for(&self, tenant: TenantId) -> Window {
        let limit = self.tenant_emails.per_tenant.get(&tenant.0).copied().unwrap_or(self.tenant_emails.limit);
        Window { limit, window_secs: self.tenant_emails.window_secs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_and_defaults_fill_gaps() {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy/limits.toml")).expect("policy/limits.toml");
        Policies::parse(&shipped).expect("shipped limits parse");
        let p = Policies::parse("[key]\nlimit = 5\nwindow_secs = 1\n").expect("partial");
        assert_eq!(p.key, Window { limit: 5, window_secs: 1 });
        assert_eq!(p.anonymous, Policies::default().anonymous);
        assert!(Policies::parse("[key]\nlimit = 0\nwindow_secs = 1\n").is_err());
        assert!(Policies::parse("[nonsense]\n").is_err());
    }
}
