//! The suite's HTTP client: every answer the API gives it is checked against the API's own
//! OpenAPI document ([`super::openapi_check`]), so a test that reaches the API any way (not
//! only through [`super::TestApp::call`]) fails when an answer drifts from `/openapi.json`.
//! Requests to anything else (the mail catcher, a loopback receiver) pass unchecked.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

/// A `reqwest::Client` that checks the API's answers.
#[derive(Clone)]
pub struct CheckedClient {
    inner: reqwest::Client,
    /// `http://host:port` of the API's listeners (the intake's, the admin API's); other URLs
    /// are not checked.
    api: Vec<String>,
}

impl CheckedClient {
    /// Checks answers from `api` (`http://127.0.0.1:port`).
    pub fn new(inner: reqwest::Client, api: String) -> Self {
        Self { inner, api: vec![api] }
    }

    /// Checks answers from `other` too (the admin API's listener).
    pub fn also(mut self, other: Option<String>) -> Self {
        self.api.extend(other);
        self
    }

    pub fn request(&self, method: Method, url: impl AsRef<str>) -> CheckedRequest {
        let url = url.as_ref().to_owned();
        let path = self.api.iter().filter(|a| !a.is_empty()).find_map(|a| url.strip_prefix(a.as_str()).filter(|p| p.starts_with('/')).map(str::to_owned));
        CheckedRequest { inner: self.inner.request(method.clone(), &url), method, path }
    }

    pub fn get(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::POST, url)
    }

    pub fn patch(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::PATCH, url)
    }
}

/// A request being built; its answer is checked when it is the API's.
pub struct CheckedRequest {
    inner: reqwest::RequestBuilder,
    method: Method,
    /// The API path (and query), when the URL is the API's.
    path: Option<String>,
}

impl CheckedRequest {
    fn map(self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        Self { inner: f(self.inner), ..self }
    }

    pub fn bearer_auth(self, token: impl std::fmt::Display) -> Self {
        self.map(|r| r.bearer_auth(token))
    }

    pub fn json<T: serde::Serialize + ?Sized>(self, body: &T) -> Self {
        self.map(|r| r.json(body))
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|r| r.body(body))
    }

    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<axum::http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<axum::http::Error>,
    {
        self.map(|r| r.header(key, value))
    }

    /// Sends it and reads the whole answer; an API answer outside the document panics.
    pub async fn send(self) -> reqwest::Result<CheckedResponse> {
        let resp = self.inner.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        if let Some(path) = &self.path {
            let json = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/json"));
            let body = if json { serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null) } else { serde_json::Value::Null };
            if json || status.is_success() {
                if let Err(drift) = super::openapi_check::check(&self.method, path, status.as_u16(), &body) {
                    panic!("the API drifted from its OpenAPI document: {drift}");
                }
            } else if let Err(drift) = super::openapi_check::declared(&self.method, path, status.as_u16()) {
                panic!("the API drifted from its OpenAPI document: {drift}");
            }
        }
        Ok(CheckedResponse { status, headers, bytes })
    }
}

/// An answer, read whole.
pub struct CheckedResponse {
    status: StatusCode,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
}

impl CheckedResponse {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub async fn json<T: serde::de::DeserializeOwned>(self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.bytes)
    }

    pub async fn text(self) -> reqwest::Result<String> {
        Ok(String::from_utf8_lossy(&self.bytes).into_owned())
    }
}
