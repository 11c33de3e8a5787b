//! `ballast slo`: SLO status.

use clap::Subcommand;


#[derive(Debug, Subcommand)]
pub(super) enum SloCommand {
    /// Each SLO (policy/slos.toml) over its window: SLI, error budget left, burn rate of every
    /// window pair (scaled to the window) and the stored alert state. Reads only.
    Status {
        /// Evaluate as of this day or time (2026-12-01 or RFC 3339) instead of now.
        #[arg(long)]
        as_of: Option<String>,
    },
}

pub(super) fn print_slo_status(statuses: &[ballast::slo::evaluate::SloStatus]) {
    let minutes = |m: i64| if m % 1440 == 0 { format!("{}d", m / 1440) } else if m % 60 == 0 { format!("{}h", m / 60) } else { format!("{m}m") };
    println!("{:<28} {:>8} {:>7} {:>10} {:>12} {:>10}  {:<10} {:<10}", "SLO", "TARGET", "WINDOW", "SLI", "BUDGET LEFT", "EVENTS", "PAGE", "TICKET");
    for s in statuses {
        let alert = |sev| s.alerts.iter().find(|a| a.severity == sev).map_or("-", |a| a.state.as_str());
        println!(
            "{:<28} {:>7.3}% {:>7} {:>9.3}% {:>11.1}% {:>10}  {:<10} {:<10}",
            s.name,
            s.target * 100.0,
            minutes(s.window_minutes),
            s.sli * 100.0,
            s.budget_remaining * 100.0,
            s.window.valid,
            alert(ballast::slo::Severity::Page),
            alert(ballast::slo::Severity::Ticket)
        );
        for r in &s.rules {
            println!(
                "    {:<6} {:>5.1}x over {:>4} and {:>4}: burn {:>7.2} / {:>7.2}{}",
                r.rule.severity.as_str(),
                r.rule.factor,
                minutes(r.rule.long_minutes),
                minutes(r.rule.short_minutes),
                r.long_burn,
                r.short_burn,
                if r.firing { "  FIRING" } else { "" }
            );
        }
    }
}
