//! Service level objectives (policy/slos.toml), in OpenSLO's terms: an SLI is the ratio of good
//! to valid events, an objective is a target ratio over a rolling window. Events are counted per
//! minute ([`record`], and app services through `POST /v1/slo/events`); `slo.evaluate`
//! ([`evaluate`]) turns the counts into burn rates over multi-window pairs and alerts, and
//! [`notify`] delivers each alert transition once.
//!
//! Burn rate = the window's bad ratio / the error budget (1 − target): 1 spends the budget
//! exactly over the SLO window. The SRE Workbook's pairs assume 30 days; like Pyrra, Ballast
//! scales them to each SLO's window by window / 28 d, so a page means the same share of budget
//! spent whatever the window.

pub mod evaluate;
pub mod history;
pub mod latency;
pub mod notify;
pub mod record;
pub mod report;

use crate::assets::ConfigFile;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A definitions file that cannot be used; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct SloFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Where an SLO's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Indicator {
    /// Intake requests (health probes excepted): good when answered within `threshold_ms`.
    IntakeLatency {
        /// The threshold, compared exactly per request.
        threshold_ms: u64,
    },
    /// Intake requests (health probes excepted): good when not answered with a 5xx.
    IntakeAvailability,
    /// Counts reported by app services only (`POST /v1/slo/events`).
    Reported,
}

/// One objective.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// `[a-z0-9-]`, unique.
    pub name: String,
    /// What it promises, for people.
    #[serde(default)]
    pub description: String,
    /// Target ratio of good to valid events, e.g. 0.995.
    pub target: f64,
    /// Rolling window, e.g. "7d".
    #[serde(with = "crate::config::duration_text")]
    pub window: Duration,
    /// Fewest valid events in a pair's long window for that pair to alert (a handful of
    /// requests never pages).
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Where its events come from. App services may report counts for any SLO as well.
    pub indicator: Indicator,
}

fn default_min_events() -> u64 {
    100
}

/// Notification formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// Ballast's own JSON body.
    #[default]
    Generic,
    /// PagerDuty Events API v2 (trigger / resolve, `dedup_key` = the alert key).
    Pagerduty,
    /// A Slack incoming webhook (`text`).
    Slack,
}

/// How alert transitions are sent (the URL and keys are secrets, in the environment).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Body shape.
    #[serde(default)]
    pub format: NotifyFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SloFile {
    #[serde(default)]
    notify: NotifySettings,
    #[serde(default)]
    slo: Vec<Slo>,
}

/// The validated definitions.
#[derive(Debug, Clone, Default)]
pub struct Slos {
    /// Every objective.
    pub slos: Vec<Slo>,
    /// The notification format.
    pub notify: NotifySettings,
}

impl Slos {
    /// Reads and validates the file.
    pub fn load(file: &ConfigFile) -> Result<Self, SloFileError> {
        let err = |problem: String| SloFileError { path: file.shown(), problem };
        let text = file.read().map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses and validates definitions text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: SloFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut seen = std::collections::BTreeSet::new();
        for s in &file.slo {
            let name_ok = !s.name.is_empty() && s.name.len() <= 63 && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(format!("slo name {:?}: use a-z, 0-9 and '-' (at most 63)", s.name));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(format!("slo {:?} is defined twice", s.name));
            }
            if !(s.target > 0.0 && s.target < 1.0) {
                return Err(format!("slo {:?}: target must be between 0 and 1 exclusive (e.g. 0.995), not {}", s.name, s.target));
            }
            if s.window < Duration::from_secs(3600) || s.window > Duration::from_secs(90 * 86_400) {
                return Err(format!("slo {:?}: window must be between 1h and 90d", s.name));
            }
        }
        Ok(Self { slos: file.slo, notify: file.notify })
    }

    /// The objective named `name`.
    pub fn get(&self, name: &str) -> Option<&Slo> {
        self.slos.iter().find(|s| s.name == name)
    }

    /// The longest window of any SLO (how long minute counts are kept, plus a day).
    pub fn longest_window(&self) -> Duration {
        self.slos.iter().map(|s| s.window).max().unwrap_or(Duration::from_secs(86_400))
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Wake someone: the budget is going fast.
    Page,
    /// Look during working hours: the budget is going, slowly.
    Ticket,
}

impl Severity {
    /// Its name in storage and alert keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multi-window rule of the SRE Workbook, for a 28-day (base) window.
#[derive(Debug, Clone, Copy)]
pub struct BaseRule {
    /// Page or ticket.
    pub severity: Severity,
    /// The burn rate both windows must reach.
    pub factor: f64,
    /// Long window at the base.
    pub long: Duration,
    /// Short window at the base.
    pub short: Duration,
}

const H: u64 = 3600;

/// The Workbook's pairs: 14.4× over 1 h and 5 m, 6× over 6 h and 30 m page; 1× over 3 d and
/// 6 h tickets.
pub const BASE_RULES: [BaseRule; 3] = [
    BaseRule { severity: Severity::Page, factor: 14.4, long: Duration::from_secs(H), short: Duration::from_secs(300) },
    BaseRule { severity: Severity::Page, factor: 6.0, long: Duration::from_secs(6 * H), short: Duration::from_secs(1800) },
    BaseRule { severity: Severity::Ticket, factor: 1.0, long: Duration::from_secs(72 * H), short: Duration::from_secs(6 * H) },
];

/// The base the Workbook's windows are scaled from (Pyrra's: 28 days).
pub const BASE_WINDOW: Duration = Duration::from_secs(28 * 86_400);

/// A rule scaled to one SLO, its windows in whole minutes (counts are per minute; a window
/// that scales below a minute boundary is rounded up so it never looks at less than it says).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rule {
    /// Page or ticket.
    pub severity: Severity,
    /// Burn rate both windows must reach.
    pub factor: f64,
    /// Long window, minutes.
    pub long_minutes: i64,
    /// Short window, minutes.
    pub short_minutes: i64,
}

/// The Workbook's rules scaled to `window` (window / 28 d).
pub fn rules_for(window: Duration) -> Vec<Rule> {
    let scale = window.as_secs_f64() / BASE_WINDOW.as_secs_f64();
    let minutes = |d: Duration| ((d.as_secs_f64() * scale / 60.0).ceil() as i64).max(1);
    BASE_RULES
        .iter()
        .map(|r| Rule { severity: r.severity, factor: r.factor, long_minutes: minutes(r.long), short_minutes: minutes(r.short) })
        .collect()
}

/// Good and valid events over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Good events.
    pub good: i64,
    /// Valid events.
    pub valid: i64,
}

impl Counts {
    /// Good / valid; 1 with no events (nothing went wrong).
    pub fn ratio(self) -> f64 {
        if self.valid <= 0 { 1.0 } else { self.good as f64 / self.valid as f64 }
    }

    /// How fast the window spends the budget of an SLO with `target`.
    pub fn burn_rate(self, target: f64) -> f64 {
        (1.0 - self.ratio()) / (1.0 - target)
    }
}

/// One rule's verdict at an evaluation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RuleState {
    /// The rule.
    pub rule: Rule,
    /// Counts over its long window.
    pub long: Counts,
    /// Counts over its short window.
    pub short: Counts,
    /// Burn over the long window.
    pub long_burn: f64,
    /// Burn over the short window.
    pub short_burn: f64,
    /// Both windows burn at least the factor, with enough traffic.
    pub firing: bool,
}

/// Judges one rule: both windows must burn at the factor, and the long window must hold at
/// least `min_events` valid events.
pub fn judge(rule: Rule, long: Counts, short: Counts, target: f64, min_events: u64) -> RuleState {
    let (long_burn, short_burn) = (long.burn_rate(target), short.burn_rate(target));
    let enough = u64::try_from(long.valid).unwrap_or(0) >= min_events;
    RuleState { rule, long, short, long_burn, short_burn, firing: enough && long_burn >= rule.factor && short_burn >= rule.factor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workbook_pairs_scale_to_a_seven_day_window_as_pyrra_does() {
        let r = rules_for(Duration::from_secs(7 * 86_400));
        // 1 h × 7/28 = 15 m, 5 m × 7/28 = 1.25 m → 2 m; 6 h → 90 m, 30 m → 7.5 m → 8 m;
        // 3 d → 18 h, 6 h → 90 m.
        let windows: Vec<(i64, i64)> = r.iter().map(|x| (x.long_minutes, x.short_minutes)).collect();
        assert_eq!(windows, vec![(15, 2), (90, 8), (1080, 90)]);
        let base: Vec<(i64, i64)> = rules_for(BASE_WINDOW).iter().map(|x| (x.long_minutes, x.short_minutes)).collect();
        assert_eq!(base, vec![(60, 5), (360, 30), (4320, 360)]);
    }

    #[test]
    fn burn_rate_is_the_bad_ratio_over_the_budget() {
        let c = Counts { good: 990, valid: 1000 };
        assert!((c.burn_rate(0.995) - 2.0).abs() < 1e-9);
        assert_eq!(Counts::default().burn_rate(0.995), 0.0);
        let rule = rules_for(Duration::from_secs(7 * 86_400))[0];
        let all_bad = Counts { good: 0, valid: 1000 };
        assert!(judge(rule, all_bad, all_bad, 0.995, 100).firing);
        assert!(!judge(rule, Counts { good: 0, valid: 50 }, all_bad, 0.995, 100).firing, "too little traffic");
        assert!(!judge(rule, all_bad, Counts { good: 1000, valid: 1000 }, 0.995, 100).firing, "the short window has recovered");
    }

    #[test]
    fn definitions_are_validated_with_clear_errors() {
        let ok = Slos::parse("[[slo]]\nname = \"a\"\ntarget = 0.99\nwindow = \"7d\"\nindicator = { kind = \"intake_availability\" }\n").expect("ok");
        assert_eq!(ok.slos[0].window, Duration::from_secs(7 * 86_400));
        let bad = Slos::parse("[[slo]]\nname = \"a\"\ntarget = 99.5\nwindow = \"7d\"\nindicator = { kind = \"reported\" }\n").expect_err("target");
        assert!(bad.contains("target"), "{bad}");
        let bad = Slos::parse("[[slo]]\nname = \"a\"\ntarget = 0.9\nwindow = \"7 fortnights\"\nindicator = { kind = \"reported\" }\n").expect_err("window");
        assert!(bad.contains("7 fortnights"), "{bad}");
        let shipped = Slos::load(&crate::assets::SLOS).expect("policy/slos.toml");
        assert!(shipped.get("intake-latency").is_some() && shipped.get("intake-availability").is_some());
    }
}

/// What evaluating SLOs and sending their notifications use (handles, cheap to clone).
#[derive(Clone)]
pub struct Deps {
    /// Minutes, alerts and notifications are read and written as the system role.
    pub system_pool: crate::db::SystemPool,
    /// The SLO definitions.
    pub slos: std::sync::Arc<Slos>,
    /// Where notifications are queued.
    pub queue: crate::queue::JobQueue,
    /// The notification target's settings.
    pub settings: std::sync::Arc<crate::config::Settings>,
}
