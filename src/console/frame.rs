//! What every console page shares: the frame (who is signed in, what they may do, the form
//! token), rendering, refusals, and the checks an action passes (CSRF, role, read-only).

use axum::http::StatusCode;
use askama::Template;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::auth::console_sessions::SignedIn;
use crate::auth::operators::Role;

/// What every signed-in page's frame shows: who, what they may do, the form token.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The operator.
    pub operator: String,
    /// Their role, as a word.
    pub role: &'static str,
    /// The CSRF token the page's forms carry.
    pub csrf: String,
    /// Whether action controls are shown (an operator or admin, and the console not read-only).
    pub can_act: bool,
    /// Seconds between the page's own refreshes (0: none).
    pub refresh_secs: u32,
    /// Where the page's figures were read from, when a replica is set (`replica (lag 0.2 s)`,
    /// or `primary: ` and why not the replica).
    pub read_from: Option<String>,
}

impl Frame {
    pub(super) fn of(session: &SignedIn, read_only: bool) -> Self {
        Frame {
            operator: session.operator.clone(),
            role: session.role.as_str(),
            csrf: session.csrf.clone(),
            can_act: session.role.allows(Role::Operator) && !read_only,
            refresh_secs: 0,
            read_from: None,
        }
    }

    /// The frame of a page read through `source` (a list that may come from the replica).
    pub(super) fn reading(mut self, source: &crate::db::replica::ReadSource) -> Self {
        self.read_from = source.note();
        self
    }
}

/// A page, or a plain error page when it cannot render.
pub(super) fn page(rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(message = "Console page did not render.", error = %e);
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// A short page saying why something was refused or failed.
#[derive(Template)]
#[template(path = "console/refusal.html")]
struct Refusal<'a> {
    heading: &'a str,
    why: &'a str,
}

pub(super) fn refusal(status: StatusCode, why: &str) -> Response {
    let mut response = page(Refusal { heading: status.canonical_reason().unwrap_or("Refused"), why }.render());
    *response.status_mut() = status;
    response
}

/// A source (PostgreSQL, Redis) failed: logged, and said to the operator without its detail.
pub(super) fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(message = "Console page: a source is unavailable.", error = %e);
    refusal(StatusCode::SERVICE_UNAVAILABLE, "The figures cannot be read now (PostgreSQL or Redis); try again shortly.")
}

/// An action the session may take: its form's CSRF token is the session's, its operator acts
/// (not a viewer), and the console is not read-only. The refusal is the page to answer.
pub(super) fn may_act(session: &SignedIn, csrf: &str, read_only: bool) -> Result<(), Response> {
    csrf_only(session, csrf)?;
    if !session.role.allows(Role::Operator) {
        return Err(refusal(StatusCode::FORBIDDEN, &format!("{} is a {}: viewers read, operators act.", session.operator, session.role.as_str())));
    }
    if read_only {
        return Err(refusal(StatusCode::FORBIDDEN, "The console is read-only (BALLAST_CONSOLE_READ_ONLY): act from the CLI or the admin API."));
    }
    Ok(())
}

/// A form that only reads (a dry run): its CSRF token must still be the session's.
pub(super) fn csrf_only(session: &SignedIn, csrf: &str) -> Result<(), Response> {
    if csrf.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(csrf.as_bytes(), session.csrf.as_bytes())) {
        return Err(refusal(StatusCode::FORBIDDEN, "This form's CSRF token is missing or is not this session's. Reload the page and try again."));
    }
    Ok(())
}

/// After an action: back to a page (303, so a reload does not post again).
pub(super) fn back_to(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// Chart height in pixels; bars grow up from the bottom.
pub(super) const CHART_H: u32 = 120;

/// One bar of a server-drawn chart (SVG, no script).
pub(crate) struct Bar {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Height.
    pub height: u32,
    /// Under the bar.
    pub label: String,
    /// Its tooltip (the exact figures).
    pub title: String,
}

impl Bar {
    /// Bar `i` of a chart of `value` out of `max`, `width` pixels apart.
    pub(super) fn at(i: usize, width: u32, value: f64, max: f64, label: String, title: String) -> Self {
        let height = if max > 0.0 { ((value / max) * f64::from(CHART_H)).round() as u32 } else { 0 }.min(CHART_H);
        Bar { x: 10 + width * i as u32, y: CHART_H - height, height, label, title }
    }
}
