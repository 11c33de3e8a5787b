//! The dunning policy file (`BALLAST_DUNNING_FILE`, default policy/dunning.toml).

use crate::assets::ConfigFile;

use serde::Deserialize;

use crate::email::Template;

/// Errors reading the policy.
#[derive(Debug, thiserror::Error)]
#[error("dunning policy {path}: {message}")]
pub struct PolicyError {
    path: String,
    message: String,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send the step's email template.
    Email,
    /// Retry the invoice's payment through the Stripe API.
    Retry,
    /// Restrict the tenant's entitlements.
    Restrict,
    /// The final action (cancel or manual review).
    Final,
}

/// The final action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalAction {
    /// Cancel the subscription through the Stripe API.
    Cancel,
    /// Mark the case for a person to decide.
    ManualReview,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    day: u32,
    action: Action,
    template: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    final_action: FinalAction,
    steps: Vec<StepFile>,
    #[serde(default)]
    disputes: DisputePolicy,
    #[serde(default)]
    paused: PausedFile,
    #[serde(default)]
    processing: ProcessingFile,
    #[serde(default)]
    action_required: ActionRequired,
}

/// `[action_required]`: a payment only the customer can complete (3-D Secure).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActionRequired {
    /// Days after the first "confirm your payment" email that a reminder goes out, until the
    /// invoice is paid or its case ends.
    #[serde(default = "default_reminder_days")]
    pub reminder_days: Vec<u32>,
}

fn default_reminder_days() -> Vec<u32> {
    vec![3, 7]
}

impl Default for ActionRequired {
    fn default() -> Self {
        Self { reminder_days: default_reminder_days() }
    }
}

/// `[paused]`: what a subscription Stripe paused grants.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PausedFile {
    #[serde(default)]
    access: crate::billing::access::HeldAccess,
}

/// `[processing]`: what a subscription waiting on a processing payment (a bank debit) grants.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessingFile {
    #[serde(default = "plan_access")]
    access: crate::billing::access::HeldAccess,
}

fn plan_access() -> crate::billing::access::HeldAccess {
    crate::billing::access::HeldAccess::Plan
}

impl Default for ProcessingFile {
    fn default() -> Self {
        Self { access: plan_access() }
    }
}

/// What a dispute (a chargeback) does besides notifying operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputePolicy {
    /// Restrict the tenant while a dispute is open (an inquiry, `warning_*`, never restricts);
    /// access comes back when it closes, won or lost.
    #[serde(default)]
    pub restrict: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Days after the first failure.
    pub day: u32,
    /// What it does.
    pub action: Action,
    /// The email, for email steps.
    pub template: Option<Template>,
}

impl Step {
    /// The stage name, half of the action key: `retry@3`.
    pub fn stage(&self) -> String {
        let action = match self.action {
            Action::Email => "email",
            Action::Retry => "retry",
            Action::Restrict => "restrict",
            Action::Final => "final",
        };
        format!("{action}@{}", self.day)
    }
}

/// The policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What the final step does.
    pub final_action: FinalAction,
    /// Steps by day.
    pub steps: Vec<Step>,
    /// What disputes do.
    pub disputes: DisputePolicy,
    /// What a subscription Stripe paused grants (a trial ended without a card, a payment
    /// failure with pausing configured); its dunning case ends as `paused`.
    pub paused: crate::billing::access::HeldAccess,
    /// What a new subscription grants while its first payment is processing (a bank debit
    /// settles in days): by default the plan, until the payment succeeds or fails.
    pub processing: crate::billing::access::HeldAccess,
    /// Reminders of a payment only the customer can complete.
    pub action_required: ActionRequired,
}

impl Policy {
    /// Parses and validates policy TOML.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut steps = Vec::new();
        for s in file.steps {
            let template = match (s.action, &s.template) {
                (Action::Email, Some(t)) => Some(Template::parse(t).ok_or_else(|| format!("day {}: no email template {t:?}", s.day))?),
                (Action::Email, None) => return Err(format!("day {}: an email step needs a template", s.day)),
                (_, Some(_)) => return Err(format!("day {}: only email steps take a template", s.day)),
                (_, None) => None,
            };
            steps.push(Step { day: s.day, action: s.action, template });
        }
        steps.sort_by_key(|s| s.day);
        let mut stages: Vec<String> = steps.iter().map(Step::stage).collect();
        stages.dedup();
        if stages.len() != steps.len() {
            return Err("two steps with the same action on the same day".into());
        }
        Ok(Self { final_action: file.final_action, steps, disputes: file.disputes, paused: file.paused.access, processing: file.processing.access, action_required: file.action_required })
    }

    /// Loads the file.
    pub fn load(file: &ConfigFile) -> Result<Self, PolicyError> {
        let shown = file.shown();
        let text = file.read().map_err(|e| PolicyError { path: shown.clone(), message: e.to_string() })?;
        Self::parse(&text).map_err(|message| PolicyError { path: shown, message })
    }

    /// The day access is restricted, if the policy restricts.
    pub fn restrict_day(&self) -> Option<u32> {
        self.steps.iter().find(|s| s.action == Action::Restrict).map(|s| s.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_is_the_documented_one() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy/dunning.toml")).expect("policy/dunning.toml");
        let p = Policy::parse(&text).expect("parses");
        let stages: Vec<String> = p.steps.iter().map(Step::stage).collect();
        assert_eq!(stages, ["email@0", "retry@1", "retry@3", "retry@5", "retry@7", "email@10", "restrict@14", "final@21"]);
        assert_eq!(p.final_action, FinalAction::Cancel);
        assert_eq!(p.disputes, DisputePolicy { restrict: false }, "disputes notify operators and restrict only when asked");
        assert!(Policy::parse("final_action = \"cancel\"\n[[steps]]\nday = 0\naction = \"email\"\n").is_err());
        assert!(Policy::parse("final_action = \"cancel\"\n[[steps]]\nday = 0\naction = \"email\"\ntemplate = \"nope\"\n").is_err());
    }
}
