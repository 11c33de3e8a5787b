//! /healthz and /readyz against real services, including a Redis that stops.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::TestApp;

/// A private redis-server on a free loopback port, killed on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by deploy/dev.sh)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn healthz_answers_and_readyz_reports_a_stopped_redis() {
    let mut redis = PrivateRedis::start().await;
    let app = TestApp::builder().env("REDIS_URL", &format!("redis://127.0.0.1:{}/0", redis.port)).spawn().await;

    let res = app.http.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let res = app.http.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(res.status(), 200);

    redis.child.kill().expect("kill redis");
    redis.child.wait().expect("reap");
    let res = app.http.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(body["error"]["message"].as_str().unwrap_or("").starts_with("redis:"), "{body}");
    assert_eq!(body["checks"]["postgres"], "ok");
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let app = TestApp::spawn().await;
    let res = app.http.get(app.url("/nope")).send().await.expect("get");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_api_describes_itself_in_openapi_3_1_route_for_route() {
    let app = crate::support::TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let resp = app.http.get(app.url("/openapi.json")).send().await.expect("get");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let doc: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for spec in ballast::api::routes() {
        let op = &doc["paths"][spec.path][spec.method.as_str().to_lowercase()];
        assert!(op["responses"].is_object(), "{} {} is served but not described", spec.method, spec.path);
    }
    let status = &doc["paths"]["/v1/jobs/{id}"]["get"];
    assert_eq!(status["parameters"][0]["name"], "id");
    assert!(status["description"].as_str().is_some_and(|d| d.contains("jobs:write")), "{status}");
}
