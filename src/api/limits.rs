//! Limits on the shape of a request, checked before any route runs: the target's length, the
//! headers' size and count, the request id; and the body, read whole by the route guard
//! within a size limit and a deadline. Every refusal is a JSON error (414, 431, 413, 408).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;

/// Longest request target (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header set (names and values), in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header lines.
pub const MAX_HEADERS: usize = 100;
/// Longest client-supplied `X-Request-Id` kept; longer or odd ones are replaced.
pub const MAX_REQUEST_ID: usize = 64;

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The middleware: refuses an oversized target or header set, and drops a client's request
/// id that is not a short token (a fresh one is generated in its place), so ids in logs and
/// answers are bounded and cannot forge log lines.
pub async fn request_shape(mut req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", format!("the request target is limited to {MAX_URI_BYTES} bytes")).into_response();
    }
    let headers = req.headers();
    let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("headers are limited to {MAX_HEADERS} lines and {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    let ids = headers.get_all(REQUEST_ID).iter().count();
    if ids > 1 || headers.get(REQUEST_ID).is_some_and(|v| !valid_request_id(v)) {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}

/// A request id worth keeping: 1 to [`MAX_REQUEST_ID`] characters of letters, digits and
/// `-_.:`.
pub fn valid_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Reads the whole body of `req` (at most `max` bytes, within `timeout`) and puts it back
/// as a buffered body, so the handler's own reading cannot be slowed or overrun by the client.
pub async fn buffered(req: Request, max: usize, timeout: Duration) -> Result<Request, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("this route takes bodies of at most {max} bytes"));
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} s", timeout.as_secs_f64()),
            ));
        }
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(_)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "body_unreadable", "the body ended before its declared length")),
        Ok(Ok(bytes)) => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_tokens() {
        assert!(valid_request_id(&HeaderValue::from_static("3f2a-b_c.d:1")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_str(&"a".repeat(65)).expect("value")));
    }
}
