//! How a route is declared: method, path, how it authenticates, whether it writes.

use axum::http::Method;

/// How a route authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// None (health).
    None,
    /// The `Stripe-Signature` header, checked by the handler over the raw body.
    StripeSignature,
    /// An API key with this scope, acting for a tenant.
    Key(crate::auth::Scope),
    /// A service-wide API key (no tenant) with this scope: the route's data is the product's,
    /// not any tenant's.
    ServiceKey(crate::auth::Scope),
    /// An operator's token (`bo_…`) whose role allows this one: the admin API. No API key
    /// reaches it.
    Operator(crate::auth::operators::Role),
}

/// One route of the API, as the router serves it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Method.
    pub method: Method,
    /// Path, in axum's syntax (`/v1/entitlements/{feature}`).
    pub path: &'static str,
    /// Authentication.
    pub auth: Auth,
    /// Writes tenant data (the per-tenant write limit applies).
    pub write: bool,
    /// Anonymous route limited per client IP (key routes are limited per key instead).
    pub limited: bool,
}

impl RouteSpec {
    /// A route.
    pub fn new(method: Method, path: &'static str, auth: Auth) -> Self {
        Self { method, path, auth, write: false, limited: false }
    }

    /// Marks a write route.
    pub fn write(mut self) -> Self {
        self.write = true;
        self
    }

    /// An admin API route: served on the console's listener (operator tokens), never the
    /// public intake's.
    pub fn is_admin(&self) -> bool {
        matches!(self.auth, Auth::Operator(_))
    }

    /// Marks an anonymous route limited per client IP.
    pub fn limited(mut self) -> Self {
        self.limited = true;
        self
    }
}
