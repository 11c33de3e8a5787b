//! Error text for clients: what was wrong with their input, without echoing the input whole
//! (a hostile body would come back at its own size) and without Ballast's internal type names.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The one error shape of the API: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// A field of the error naming what was wrong (e.g. `"variable": "name"`).
    pub detail: Option<(&'static str, String)>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), detail: None }
    }

    /// The same error, naming what was wrong in a field of its own.
    pub fn with_field(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.detail = Some((name, value.into()));
        self
    }
}

/// The error shape as `/openapi.json` names it (`Error`); [`ApiError`] writes it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorAnswer {
    error: ErrorDetail,
}

/// What went wrong. Some errors name what was wrong in a field more (`field`, `item`,
/// `variable`, `retry_after`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable.
    code: String,
    /// A sentence for people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        if let Some((name, value)) = self.detail {
            body["error"][name] = value.into();
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// Longest piece of client input quoted back in an error message.
pub const MAX_ECHO: usize = 80;

/// A JSON body that could not be read into the route's type, as the API's error.
pub fn json_rejection(e: &JsonRejection) -> ApiError {
    match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
        }
        _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the body is larger than this route accepts"),
        JsonRejection::JsonSyntaxError(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {}", cleaned(&source_text(e)))),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body does not fit this route: {}", cleaned(&source_text(e)))),
    }
}

/// A serde_json error as a client may read it.
pub fn json_error_text(e: &serde_json::Error) -> String {
    cleaned(&e.to_string())
}

/// The innermost error of a rejection: serde's own text, without axum's preamble.
fn source_text(e: &JsonRejection) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// serde's message with every quoted piece of input cut to [`MAX_ECHO`] bytes and type names
/// (`struct NewJob`, `enum Scope`) replaced by what they mean to a client.
pub fn cleaned(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4 * MAX_ECHO));
    let mut rest = message;
    // Quoted input is between "…" or `…`; each quoted piece is cut on its own.
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&words(&rest[..=open]));
        let after = &rest[open + 1..];
        match after.find(quote) {
            Some(close) => {
                out.push_str(&crate::newtypes::truncated(&after[..close], MAX_ECHO));
                out.push(quote);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&crate::newtypes::truncated(after, MAX_ECHO));
                rest = "";
            }
        }
    }
    out.push_str(&words(rest));
    crate::newtypes::truncated(&out, 4 * MAX_ECHO).into_owned()
}

/// Unquoted text with serde's type names put in a client's terms.
fn words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut tokens = text.split(' ').peekable();
    let mut first = true;
    while let Some(token) = tokens.next() {
        if !first {
            out.push(' ');
        }
        first = false;
        match token {
            "struct" | "enum" if tokens.peek().is_some() => {
                let name = tokens.next().unwrap_or_default();
                let tail: String = name.chars().skip_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push_str(if token == "struct" { "an object" } else { "one of the allowed values" });
                out.push_str(&tail);
            }
            // A long unquoted word is input too (serde names the path of the field at fault).
            other => out.push_str(&crate::newtypes::truncated(other, MAX_ECHO)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut_and_type_names_are_hidden() {
        let long = "x".repeat(100_000);
        let msg = format!("invalid type: string \"{long}\", expected struct NewJob at line 1 column 9");
        let out = cleaned(&msg);
        assert!(out.len() < 300, "{}", out.len());
        assert!(out.contains("expected an object at line 1"), "{out}");
        assert!(!out.contains("NewJob"), "{out}");
        let msg = format!("unknown field `{long}`, expected one of `kind`, `payload`");
        let out = cleaned(&msg);
        assert!(out.contains("`kind`") && out.len() < 300, "{out}");
        let out = cleaned(&format!("{long}: unknown field"));
        assert!(out.ends_with("unknown field") && out.len() < 200, "{out}");
    }
}
