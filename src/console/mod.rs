//! The operator console: server-rendered pages for the fleet, its queues and dead letters, its
//! runbooks and its customers, on a listener of its own (`BALLAST_CONSOLE_LISTEN`, loopback by
//! default), never the public intake's. Operators sign in with their token (`ballast operators
//! add`); the session is a cookie (HttpOnly, SameSite=Strict, Secure behind TLS) with a CSRF
//! token on every form. Viewers see no controls and the server refuses their actions; every
//! action goes through the same operations as the CLI and the admin API, audited with the
//! operator's name. Templates (askama) and the stylesheet are compiled into the binary.

mod customer_sections;
mod customers;
mod fleet;
mod frame;
mod pages;
mod runbook_page;
mod session;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::state::AppState;

pub use session::COOKIE;

/// The stylesheet, Ballast's own (no third-party asset, no CDN).
const STYLESHEET: &str = include_str!("console.css");

/// The console's routes, every page but sign-in behind a session.
pub fn router(state: AppState) -> Router {
    let signed_in = Router::new()
        .route("/", get(pages::overview))
        .route("/dead", get(pages::dead_letters))
        .route("/dead/act", post(pages::act_on_dead))
        .route("/queues", get(fleet::queues))
        .route("/queues/{kind}/{action}", post(fleet::pause))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/runbooks", get(pages::runbooks))
        .route("/runbooks/{name}", get(runbook_page::runbook))
        .route("/runbooks/{name}/run", post(runbook_page::run_runbook))
        .route("/runs/{id}", get(pages::run))
        .route("/schedules", get(fleet::schedules))
        .route("/schedules/{kind}/run", post(fleet::run_now))
        .route("/slos", get(fleet::slos))
        .route("/maintenance", get(fleet::maintenance))
        .route("/customers", get(customers::list))
        .route("/customers/{id}", get(customers::show))
        .route("/customers/{id}/overrides", post(customers::grant))
        .route("/customers/{id}/support", post(customer_sections::open_support))
        .route("/sign-out", post(session::sign_out))
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::required));
    Router::new()
        .route("/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/console.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET) }))
        .merge(signed_in)
        .with_state(state.clone())
        // The admin API shares the console's listener: operators' surfaces, never the public port.
        .merge(crate::api::admin_router(state))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { crate::api::ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method") })
        .layer(axum::middleware::from_fn(security_headers))
}

/// An unknown path: the admin API's JSON error under `/v1/`, a page elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/v1/") {
        return crate::api::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    }
    frame::refusal(axum::http::StatusCode::NOT_FOUND, "No such page.")
}

/// No framing, no sniffing, no caching of pages that show customers, no referrer leaving.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'"));
    response
}
