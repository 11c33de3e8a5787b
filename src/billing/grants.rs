//! What a tenant's subscriptions grant together, feature by feature and over time. Each live
//! subscription contributes its plan's grants and its add-ons (or the restricted set, when it
//! is paused or restricted by dunning) until its own end; the tenant gets, at each moment, the
//! best of what the contributions alive then grant:
//!
//! - a feature is on when any contribution turns it on;
//! - its limit is the highest plan limit among them (on without a limit is unlimited), plus
//!   every add-on's amount times its quantity;
//! - the tenant's plan (its usage limits, what it is shown on) is the highest-ranked plan
//!   (`rank` in plans.toml) among them, then the plan id that sorts first.
//!
//! Each feature's future is a short list of tiers, each with its end: a higher plan that ends
//! in ten days gives way to an open-ended lower one at that second, without a recompute.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::plans::Grant;

/// What one subscription grants, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// The plan's id and rank; `None` for the restricted set or a subscription of add-ons only.
    pub plan: Option<(String, i32)>,
    /// The restricted set (a paused subscription, or one restricted by dunning).
    pub restricted: bool,
    /// Feature → the plan's (or the restricted set's) grant.
    pub grants: BTreeMap<String, Grant>,
    /// Feature → the amount the subscription's add-ons add to its limit (times quantity).
    pub adds: BTreeMap<String, i64>,
    /// Features the add-ons switch on.
    pub switches: BTreeSet<String>,
    /// When it stops granting by itself; `None`: open-ended.
    pub until: Option<DateTime<Utc>>,
}

impl Contribution {
    fn live_after(&self, start: Option<DateTime<Utc>>) -> bool {
        match (self.until, start) {
            (None, _) | (_, None) => true,
            (Some(until), Some(start)) => until > start,
        }
    }
}

/// A feature's value from some moment until `until` (`None`: for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tier {
    /// On or off.
    pub enabled: bool,
    /// Its limit when on; `None` when on is unlimited.
    pub limit: Option<i64>,
    /// When this value ends.
    pub until: Option<DateTime<Utc>>,
}

/// What the contributions alive together grant for `feature`.
fn value(live: &[&Contribution], feature: &str) -> (bool, Option<i64>) {
    let mut enabled = false;
    let mut unlimited = false;
    let mut limit: Option<i64> = None;
    for c in live {
        match c.grants.get(feature) {
            Some(Grant::Switch(true)) => {
                enabled = true;
                unlimited = true;
            }
            Some(Grant::Limit(n)) => {
                enabled = true;
                limit = Some(limit.map_or(*n, |l| l.max(*n)));
            }
            Some(Grant::Switch(false)) | None => {}
        }
    }
    let added: i64 = live.iter().filter_map(|c| c.adds.get(feature)).sum();
    let switched = live.iter().any(|c| c.switches.contains(feature));
    if unlimited {
        return (true, None);
    }
    match (enabled || switched || added > 0, limit) {
        (false, _) => (false, None),
        (true, Some(l)) => (true, Some(l.saturating_add(added))),
        (true, None) if added > 0 => (true, Some(added)),
        (true, None) => (true, None),
    }
}

/// Each feature's tiers: the value now, then each change as contributions end. A feature
/// off for good after some tier ends with that tier (a reader past every tier reads off).
pub fn schedule<'a>(contributions: &[Contribution], features: impl Iterator<Item = &'a String>) -> BTreeMap<String, Vec<Tier>> {
    let ends: BTreeSet<DateTime<Utc>> = contributions.iter().filter_map(|c| c.until).collect();
    let starts: Vec<Option<DateTime<Utc>>> = [None].into_iter().chain(ends.iter().copied().map(Some)).collect();
    let segments: Vec<(Vec<&Contribution>, Option<DateTime<Utc>>)> = starts
        .iter()
        .enumerate()
        .map(|(i, start)| (contributions.iter().filter(|c| c.live_after(*start)).collect(), starts.get(i + 1).copied().flatten()))
        .collect();
    features
        .map(|feature| {
            let mut tiers: Vec<Tier> = Vec::new();
            for (live, until) in &segments {
                let (enabled, limit) = value(live, feature);
                match tiers.last_mut() {
                    Some(last) if (last.enabled, last.limit) == (enabled, limit) => last.until = *until,
                    _ => tiers.push(Tier { enabled, limit, until: *until }),
                }
            }
            // Off for good at the end says nothing a reader past the last tier does not know.
            if tiers.len() > 1 && tiers.last().is_some_and(|t| !t.enabled && t.until.is_none()) {
                tiers.pop();
            }
            (feature.clone(), tiers)
        })
        .collect()
}

/// The tenant's plan among the contributions: the highest rank, then the first id.
pub fn leading_plan(contributions: &[Contribution]) -> Option<&Contribution> {
    contributions
        .iter()
        .filter(|c| c.plan.is_some())
        .max_by(|a, b| {
            let (a_id, a_rank) = a.plan.as_ref().map(|(id, r)| (id.as_str(), *r)).unwrap_or_default();
            let (b_id, b_rank) = b.plan.as_ref().map(|(id, r)| (id.as_str(), *r)).unwrap_or_default();
            a_rank.cmp(&b_rank).then_with(|| b_id.cmp(a_id))
        })
}


/// The value of `tiers` at `now`: the first tier not ended, else off.
pub fn at<'a>(tiers: impl IntoIterator<Item = &'a Tier>, now: DateTime<Utc>) -> (bool, Option<i64>) {
    tiers.into_iter().find(|t| t.until.is_none_or(|u| u > now)).map_or((false, None), |t| (t.enabled, t.limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn plan(id: &str, rank: i32, grants: &[(&str, Grant)], until: Option<DateTime<Utc>>) -> Contribution {
        Contribution {
            plan: Some((id.into(), rank)),
            restricted: false,
            grants: grants.iter().map(|(f, g)| (f.to_string(), *g)).collect(),
            adds: BTreeMap::new(),
            switches: BTreeSet::new(),
            until,
        }
    }

    fn features() -> Vec<String> {
        ["projects", "seats", "sso"].map(String::from).to_vec()
    }

    #[test]
    fn a_higher_plan_ending_in_ten_days_gives_way_to_an_open_ended_lower_one_at_its_end() {
        let now = Utc::now();
        let end = now + Duration::days(10);
        let pro = plan("pro", 2, &[("projects", Grant::Limit(50)), ("sso", Grant::Switch(true))], Some(end));
        let starter = plan("starter", 1, &[("projects", Grant::Limit(3))], None);
        // In either order: the answer does not depend on which subscription was read first.
        for contributions in [vec![pro.clone(), starter.clone()], vec![starter.clone(), pro.clone()]] {
            let s = schedule(&contributions, features().iter());
            assert_eq!(s["projects"], vec![Tier { enabled: true, limit: Some(50), until: Some(end) }, Tier { enabled: true, limit: Some(3), until: None }]);
            assert_eq!(s["sso"], vec![Tier { enabled: true, limit: None, until: Some(end) }]);
            assert_eq!(at(&s["projects"], end - Duration::seconds(1)), (true, Some(50)));
            assert_eq!(at(&s["projects"], end), (true, Some(3)), "the lower plan from the second the higher one ends");
            assert_eq!(at(&s["sso"], end), (false, None));
            assert_eq!(leading_plan(&contributions).and_then(|c| c.plan.clone()), Some(("pro".into(), 2)));
        }
    }

    #[test]
    fn addons_add_their_amount_times_quantity_to_the_plans_limit_and_alone_grant_it() {
        let mut with_seats = plan("starter", 1, &[("seats", Grant::Limit(3))], None);
        with_seats.adds.insert("seats".into(), 2 * 5);
        with_seats.switches.insert("sso".into());
        let s = schedule(&[with_seats], features().iter());
        assert_eq!(at(&s["seats"], Utc::now()), (true, Some(13)));
        assert_eq!(at(&s["sso"], Utc::now()), (true, None));
        assert_eq!(at(&s["projects"], Utc::now()), (false, None));
        // An add-on bought on its own subscription adds to the plan of another.
        let starter = plan("starter", 1, &[("seats", Grant::Limit(3))], None);
        let addon_only = Contribution { plan: None, restricted: false, grants: BTreeMap::new(), adds: [("seats".to_owned(), 5)].into(), switches: BTreeSet::new(), until: None };
        let s = schedule(&[starter, addon_only], features().iter());
        assert_eq!(at(&s["seats"], Utc::now()), (true, Some(8)));
    }

    #[test]
    fn an_ended_grant_reads_off_and_an_open_ended_one_never_ends() {
        let now = Utc::now();
        let s = schedule(&[plan("p", 0, &[("seats", Grant::Limit(3))], Some(now))], features().iter());
        assert_eq!(s["seats"], vec![Tier { enabled: true, limit: Some(3), until: Some(now) }]);
        assert_eq!(at(&s["seats"], now), (false, None));
        let s = schedule(&[], features().iter());
        assert_eq!(s["seats"], vec![Tier { enabled: false, limit: None, until: None }]);
    }
}
