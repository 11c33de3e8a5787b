//! The API's lists, as Stripe shapes them: `{"object": "list", "data": […], "has_more"}`.
//! One concrete type per list, so `/openapi.json` names each list's items.

use serde::Serialize;

use crate::tenants::view::TenantView;
use crate::webhooks_out::deliveries::DeliveryLog;
use crate::webhooks_out::endpoints::{Endpoint, Page};

/// What every list's `object` says.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    /// A list.
    List,
}

/// `GET /v1/webhook-endpoints`: the tenant's endpoints, never their secrets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    /// `list`.
    pub object: ListObject,
    /// This page.
    pub data: Vec<Endpoint>,
    /// More follow: ask again with `starting_after` the last item's id.
    pub has_more: bool,
}

/// `GET /v1/webhook-endpoints/{id}/deliveries`: the endpoint's deliveries, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// `list`.
    pub object: ListObject,
    /// This page.
    pub data: Vec<DeliveryLog>,
    /// More follow: ask again with `starting_after` the last item's id.
    pub has_more: bool,
}

/// `GET /v1/tenants`: tenants with their billing standing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantList {
    /// `list`.
    pub object: ListObject,
    /// Always `/v1/tenants`.
    pub url: &'static str,
    /// This page.
    pub data: Vec<TenantView>,
    /// More follow: ask again with `starting_after` the last item's id.
    pub has_more: bool,
}

impl From<Page<Endpoint>> for EndpointList {
    fn from(page: Page<Endpoint>) -> Self {
        Self { object: ListObject::List, data: page.data, has_more: page.has_more }
    }
}

impl From<Page<DeliveryLog>> for DeliveryList {
    fn from(page: Page<DeliveryLog>) -> Self {
        Self { object: ListObject::List, data: page.data, has_more: page.has_more }
    }
}
