//! deploy/alerts.toml: each rule's threshold and runbook page.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::assets::ConfigFile;

/// The file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RulesError {
    /// Which file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every rule's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// How often the fleet evaluates (seconds).
    pub evaluate_every_secs: u64,
    /// The oldest ready job of a kind waited too long.
    pub queue_age: QueueAge,
    /// New dead letters.
    pub dead_letters: Windowed,
    /// No scheduler leader.
    pub no_leader: NoLeader,
    /// Dead emails.
    pub dead_emails: Windowed,
    /// Dead outbound deliveries.
    pub dead_deliveries: Windowed,
    /// Usage rows Stripe refused.
    pub dead_usage_reports: Windowed,
    /// A Stripe event unprocessed too long.
    pub inbox_unprocessed: Threshold,
    /// A maintenance service overdue.
    pub maintenance_overdue: Runbook,
    /// Backups stale or a rehearsal failed.
    pub backups: Backups,
    /// An uptime check failing.
    pub probe: Probe,
    /// PostgreSQL's connections near its limit.
    pub db_connections: DbConnections,
    /// Stripe API calls failing.
    pub stripe_api: StripeApi,
}

/// `[stripe_api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeApi {
    /// The page to open.
    pub runbook: String,
    /// The window counted, in minutes (the current one included).
    pub window_minutes: u32,
    /// The share of failed calls that fires.
    pub max_failed_share: f64,
    /// Fewer calls than this in the window decide nothing (one failed call of one is noise).
    pub min_calls: u64,
}

/// `[db_connections]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConnections {
    /// The page to open.
    pub runbook: String,
    /// The share of `max_connections` in use that fires.
    pub max_share: f64,
}

/// `[probe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The page to open.
    pub runbook: String,
    /// How long a check may fail before it fires.
    pub for_secs: u64,
}

/// `[backups]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backups {
    /// The page to open.
    pub runbook: String,
    /// The newest backup may be this old.
    pub backup_max_age_hours: u32,
    /// The newest passing rehearsal may be this old.
    pub rehearsal_max_age_days: u32,
}

/// `[queue_age]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueAge {
    /// The page to open.
    pub runbook: String,
    /// Seconds, for kinds not listed.
    pub default_secs: u64,
    /// Seconds per kind.
    #[serde(default)]
    pub kinds: BTreeMap<String, u64>,
}

impl QueueAge {
    /// The threshold of `kind` (seconds).
    pub fn threshold(&self, kind: &str) -> u64 {
        self.kinds.get(kind).copied().unwrap_or(self.default_secs)
    }
}

/// A rule counting what happened in a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Windowed {
    /// The page to open.
    pub runbook: String,
    /// Minutes back.
    pub window_minutes: u32,
}

/// `[no_leader]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoLeader {
    /// The page to open.
    pub runbook: String,
    /// How many lease lengths without a leader before it fires.
    pub lease_periods: u32,
}

/// A rule with an age threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The page to open.
    pub runbook: String,
    /// Seconds.
    pub threshold_secs: u64,
}

/// A rule with only its page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// The page to open.
    pub runbook: String,
}

impl Rules {
    /// Parses and checks the file's text: every runbook names a page of runbooks/.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rules: Rules = toml::from_str(text).map_err(|e| e.to_string())?;
        if rules.evaluate_every_secs == 0 {
            return Err("evaluate_every_secs must be at least 1".into());
        }
        let pages: Vec<String> = crate::assets::runbooks()
            .files("md")
            .map_err(|(dir, e)| format!("{e} ({})", dir.display()))?
            .into_iter()
            .filter_map(|(path, _)| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        for page in rules.runbooks() {
            if !pages.iter().any(|p| p == page) {
                return Err(format!("runbook {page:?} is no page of runbooks/ (there are: {})", pages.join(", ")));
            }
        }
        Ok(rules)
    }

    /// Loads the file.
    pub fn load(file: &ConfigFile) -> Result<Self, RulesError> {
        let text = file.read().map_err(|e| RulesError { path: file.shown(), message: e.to_string() })?;
        Self::parse(&text).map_err(|message| RulesError { path: file.shown(), message })
    }

    /// Every page the rules name.
    pub fn runbooks(&self) -> [&str; 12] {
        [
            &self.queue_age.runbook,
            &self.dead_letters.runbook,
            &self.no_leader.runbook,
            &self.dead_emails.runbook,
            &self.dead_deliveries.runbook,
            &self.inbox_unprocessed.runbook,
            &self.maintenance_overdue.runbook,
            &self.backups.runbook,
            &self.probe.runbook,
            &self.db_connections.runbook,
            &self.stripe_api.runbook,
            &self.dead_usage_reports.runbook,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_parse_and_name_real_pages() {
        let rules = Rules::load(&crate::assets::ALERTS).expect("deploy/alerts.toml");
        assert_eq!(rules.queue_age.threshold("stripe.event"), 120);
        assert_eq!(rules.queue_age.threshold("noop"), rules.queue_age.default_secs);
        assert_eq!(rules.no_leader.lease_periods, 2);
        let bad = include_str!("../../deploy/alerts.toml").replace("runbook = \"scheduler-no-leader\"", "runbook = \"nowhere\"");
        assert!(Rules::parse(&bad).is_err_and(|e| e.contains("nowhere")));
    }
}
