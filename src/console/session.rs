//! Signing in and out, and the session every other page requires. Sign-in takes an operator
//! token; a wrong one counts towards the client's ban exactly as on the API (the limiter's
//! failed-credential count), and a banned client is refused before its token is checked.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::auth::console_sessions::{self, SignedIn};
use crate::ratelimit::{Limit, PolicyName, Request as LimitRequest, Subject, Verdict};
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "ballast_console";

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    error: Option<&'a str>,
}

pub(super) async fn sign_in_page() -> Response {
    super::frame::page(SignInPage { error: None }.render())
}

fn sign_in_refused(status: StatusCode, why: &str) -> Response {
    let mut r = super::frame::page(SignInPage { error: Some(why) }.render());
    *r.status_mut() = status;
    r
}

/// The sign-in form.
#[derive(Debug, serde::Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    token: String,
}

/// Whether the request came through TLS (the proxy in front says so): the cookie is then Secure.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}")).unwrap_or(HeaderValue::from_static(""))
}

pub(super) async fn sign_in(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, Form(form): Form<SignInForm>) -> Response {
    let ip = peer.ip();
    let operator = match crate::auth::operators::authenticate(&state.system_pool, form.token.trim()).await {
        Ok(op) => op,
        Err(e) => {
            tracing::error!(message = "Console sign-in: PostgreSQL unavailable.", error = %e);
            return sign_in_refused(StatusCode::SERVICE_UNAVAILABLE, "Sign-in cannot be checked now; try again shortly.");
        }
    };
    // The ban is checked (and a wrong token counted) before anything tells a right token apart.
    let window = state.limiter.policies.anonymous;
    let limits = vec![Limit { policy: PolicyName::Anonymous, subject: Subject::Ip(ip), window }];
    match state.limiter.decide(&LimitRequest { ban_of: Some(ip), failed_credential: operator.is_none(), limits }).await {
        Ok(Verdict::Admit(_)) => {}
        Ok(_) => return sign_in_refused(StatusCode::TOO_MANY_REQUESTS, "Too many attempts from this address: wait a while before signing in again."),
        Err(e) => {
            tracing::error!(message = "Console sign-in: rate limiter unavailable (fail closed).", error = %e);
            return sign_in_refused(StatusCode::SERVICE_UNAVAILABLE, "Sign-in cannot be checked now; try again shortly.");
        }
    }
    let Some(operator) = operator else { return sign_in_refused(StatusCode::UNAUTHORIZED, "That is not an operator token, or its operator is disabled.") };
    let ttl = state.settings.console.session_ttl;
    match console_sessions::open(&state.system_pool, &operator, ttl).await {
        Ok((secret, _)) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie(&secret, i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX), behind_tls(&headers)));
            r
        }
        Err(e) => {
            tracing::error!(message = "Console sign-in: session not stored.", error = %e);
            sign_in_refused(StatusCode::SERVICE_UNAVAILABLE, "Sign-in cannot be completed now; try again shortly.")
        }
    }
}

/// The session cookie's value in `headers`.
fn presented(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Every page but sign-in: a live session, or back to sign-in (an expired one included).
pub(super) async fn required(State(state): State<AppState>, mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let found = match presented(req.headers()) {
        Some(value) => console_sessions::find(&state.system_pool, &value).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(session)) => {
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        Ok(None) => Redirect::to("/sign-in").into_response(),
        Err(e) => {
            tracing::error!(message = "Console session check: PostgreSQL unavailable.", error = %e);
            super::frame::refusal(StatusCode::SERVICE_UNAVAILABLE, "Sessions cannot be checked now; try again shortly.")
        }
    }
}

/// The sign-out form.
#[derive(Debug, serde::Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn sign_out(State(state): State<AppState>, axum::Extension(session): axum::Extension<SignedIn>, headers: HeaderMap, Form(form): Form<CsrfOnly>) -> Response {
    if let Err(refused) = super::frame::csrf_only(&session, &form.csrf) {
        return refused;
    }
    if let Err(e) = console_sessions::end(&state.system_pool, &session).await {
        tracing::error!(message = "Console sign-out not stored.", error = %e);
    }
    let mut r = Redirect::to("/sign-in").into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie("", 0, behind_tls(&headers)));
    r
}
