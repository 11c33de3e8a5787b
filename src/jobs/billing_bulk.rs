//! What the bulk-operation admin jobs share (`billing.bulk_move`, `billing.bulk_collection`,
//! `billing.bulk_cancel`): the cohort as `--param` gives it, and the run through
//! [`crate::billing::bulk_run`] with its errors as the queue reads them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::admin::AdminJob;
use super::deps::Mirror;
use super::kind::{JobContext, JobError};
use crate::billing::bulk::{BulkError, Cohort};
use crate::billing::bulk_run::{self, BulkReport, BulkRun, BulkRunError, Change};

/// Tenants as `--param tenants=a,b` (a comma-separated string) or a JSON list.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TenantList {
    /// None given.
    #[default]
    None,
    /// `a,b,c`
    Text(String),
    /// `["a", "b"]`
    List(Vec<String>),
}

impl TenantList {
    fn ids(&self) -> Vec<String> {
        let split = |t: &str| t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        match self {
            TenantList::None => Vec::new(),
            TenantList::Text(t) => split(t),
            TenantList::List(l) => l.iter().flat_map(|t| split(t)).collect(),
        }
    }
}

/// The cohort of `plan`, `price` and `tenants` (every one given must hold).
pub fn cohort(plan: &Option<String>, price: &Option<String>, tenants: &TenantList) -> Cohort {
    Cohort { plan: plan.clone(), price: price.clone(), tenants: tenants.ids() }
}

/// One of the bulk operations: its kind's name and parameters, and what they ask.
pub trait BulkKind: Send + Sync + 'static {
    /// The kind's name in jobs/.
    const KIND: &'static str;
    /// Its parameters (`--param`).
    type Params: DeserializeOwned + Serialize + Default + utoipa::ToSchema + Send + Sync + 'static;
    /// The cohort, the change and the limit the parameters ask for (or why they ask nothing).
    fn asked(p: &Self::Params) -> Result<(Cohort, Change, Option<i64>), JobError>;
}

/// A bulk operation as an admin job: runs what its parameters ask through
/// [`crate::billing::bulk_run`], each tenant's change audited with the operator's name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bulk<K>(pub K);

impl<K: BulkKind> AdminJob for Bulk<K> {
    const KIND: &'static str = K::KIND;
    type Params = K::Params;
    type Report = BulkReport;
    type Deps = Mirror;

    async fn run(&self, p: &K::Params, execute: bool, ctx: &JobContext<Mirror>) -> Result<BulkReport, JobError> {
        self.run_as(p, execute, "fleet", ctx).await
    }

    async fn run_as(&self, p: &K::Params, execute: bool, actor: &str, ctx: &JobContext<Mirror>) -> Result<BulkReport, JobError> {
        let (cohort, change, limit) = K::asked(p)?;
        let deps = &ctx.state;
        let r = BulkRun { pool: &deps.system_pool, stripe: &deps.stripe, plans: &deps.plans, actor, progress: &ctx.progress };
        bulk_run::run(&r, &cohort, &change, execute, limit.unwrap_or(10_000).clamp(1, 100_000)).await.map_err(|e| match e {
            BulkRunError::Bulk(BulkError::Asked(why)) => JobError::Cancel(why),
            other => JobError::Retry(other.to_string()),
        })
    }
}
