//! The HTTP side of a delivery: one client for every endpoint (connections kept alive per
//! host), whose every new connection goes only to an address [`super::address`] allowed. Names
//! are resolved by [`CheckedResolver`], which checks every answer and hands the connector only
//! checked addresses, so what is checked is what is connected (DNS rebinding cannot slip an
//! internal address in between); an address written in the URL is checked before the request.
//! No redirects are followed (a 3xx is a failed attempt, as the specification says) and no
//! proxy from the environment is used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::address::AddressPolicy;

/// Resolves names for the delivery client, refusing any name with an address that is not
/// allowed.
#[derive(Debug, Clone)]
struct CheckedResolver {
    policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    // The resolver's words may name internal servers: the log has them.
                    tracing::info!(message = "Outbound webhook host did not resolve.", host, error = %e);
                    Vec::new()
                }
            };
            for addr in &addrs {
                policy.check(&host, addr.ip())?;
            }
            if addrs.is_empty() {
                return Err(Box::new(super::address::Refused::Unresolved) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What an endpoint answered, or why it did not.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status code, if it answered.
    pub status: Option<u16>,
    /// The start of its body (never logged).
    pub body: Option<String>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    /// From the request's start to the answer's end.
    pub took: Duration,
    /// The endpoint did not answer within the timeout (what opens its circuit).
    pub timed_out: bool,
}

impl Answer {
    /// A 2xx within the timeout.
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The delivery client.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

/// The client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("webhook client: {0}")]
pub struct ClientError(String);

impl Sender {
    /// A client connecting only where `policy` allows, each attempt limited to `timeout`.
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Result<Self, ClientError> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver { policy: policy.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .user_agent(concat!("Ballast-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self { http, policy })
    }

    /// POSTs `body` to `url` with `headers`; keeps at most `keep` bytes of the answer's body.
    pub async fn post(&self, url: &str, headers: [(&'static str, String); 3], body: String, keep: usize) -> Answer {
        let start = Instant::now();
        let failed = |error: String| Answer { status: None, body: None, error: Some(error), took: start.elapsed(), timed_out: false };
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return failed("refused: only http and https URLs are delivered to".into()),
        };
        // An address in the URL is never resolved, so it is checked here.
        if let Some(ip) = parsed.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok())
            && let Err(refused) = self.policy.check(&ip.to_string(), ip)
        {
            return failed(refused.to_string());
        }
        let mut request = self.http.post(parsed).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Answer { timed_out: e.is_timeout(), ..failed(describe(&e)) },
        };
        let status = response.status().as_u16();
        let text = read_prefix(response, keep).await;
        let error = (!(200..300).contains(&status)).then(|| format!("the endpoint answered {status}"));
        Answer { status: Some(status), body: text, error, took: start.elapsed(), timed_out: false }
    }
}

/// At most `keep` bytes of the body (cut at a character boundary), reading no more than that.
async fn read_prefix(mut response: reqwest::Response, keep: usize) -> Option<String> {
    let mut bytes = Vec::new();
    while bytes.len() < keep {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    if bytes.is_empty() {
        return None;
    }
    bytes.truncate(keep);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some(crate::newtypes::truncated(&text, keep).into_owned())
}

/// What went wrong, in words (the innermost cause says the most: refused address, timeout).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out waiting for the endpoint".into();
    }
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
        if let Some(refused) = inner.downcast_ref::<super::address::Refused>() {
            return refused.to_string();
        }
    }
    // The innermost cause is the operating system's or the TLS library's own words (connection
    // refused, certificate unknown): about the tenant's endpoint, not the fleet.
    if e.is_connect() {
        return format!("could not connect: {source}");
    }
    format!("request failed: {source}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    #[tokio::test]
    async fn a_name_is_resolved_and_every_answer_checked_before_any_connection() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let name = |n: &str| n.parse::<reqwest::dns::Name>().expect("name");
        let closed = CheckedResolver { policy: Arc::new(AddressPolicy::new(Vec::new())) };
        let refused = closed.resolve(name("localhost")).await.err().expect("loopback refused");
        assert!(refused.downcast_ref::<super::super::address::Refused>().is_some(), "{refused}");
        let open = CheckedResolver { policy: Arc::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().expect("v4"), "::1/128".parse().expect("v6")])) };
        let addrs: Vec<SocketAddr> = open.resolve(name("localhost")).await.map_err(|e| e.to_string()).expect("allowed").collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        // An address in the URL is checked without resolving.
        let sender = Sender::new(AddressPolicy::new(Vec::new()), Duration::from_secs(1)).expect("client");
        let answer = sender.post("http://169.254.169.254/latest/meta-data", [("a", String::new()), ("b", String::new()), ("c", String::new())], String::new(), 10).await;
        assert!(answer.error.as_deref().is_some_and(|e| e.starts_with("address_not_allowed: special_purpose_address") && !e.contains("169.254")) && answer.status.is_none(), "{answer:?}");
    }
}
