//! Attack drills against the intake (issue 17): while a slowloris or a signature flood is
//! under way, `/healthz` answers within 100 ms and a valid webhook is accepted. Both run on a
//! two-thread runtime, as the fleet does on two cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::TestApp;

/// Slowest `/healthz` answer tolerated during an attack.
const HEALTHY: Duration = Duration::from_millis(100);

/// Probes the member as a load balancer and Stripe would: `/healthz` a few times (returns the
/// slowest answer) and one valid webhook (must be accepted).
async fn probe(app: &TestApp, event_id: &str) -> Duration {
    // A fresh client: an attack must not be able to hide behind a warm connection.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let resp = client.get(app.url("/healthz")).send().await.expect("healthz answers");
        assert_eq!(resp.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    let event = serde_json::json!({"id": event_id, "type": "customer.updated", "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"id": "cus_drill", "object": "customer"}}});
    assert_eq!(app.deliver(&event).await, StatusCode::OK, "a valid webhook was not accepted during the attack");
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_drill_healthz_answers_and_slow_connections_are_closed() {
    let _machine = crate::support::MACHINE.write().await;
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).env("BALLAST_HTTP_HEADER_TIMEOUT_SECS", "2").spawn().await;
    let addr = app.addr.expect("api");
    let stop = CancellationToken::new();
    let mut attackers = Vec::new();
    // 300 connections: silent, a partial request line, headers a byte at a time.
    for i in 0..300 {
        let stop = stop.clone();
        attackers.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let started = Instant::now();
            let drip = b"POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            match i % 3 {
                0 => {}
                1 => stream.write_all(b"GET /heal").await.expect("write"),
                _ => {
                    for byte in drip.iter().take(3) {
                        stream.write_all(&[*byte]).await.expect("write");
                    }
                }
            }
            // Keep dripping (for the third kind) until the server closes the connection.
            let mut buf = [0u8; 512];
            let mut sent = 3;
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Some(started.elapsed()),
                        Ok(_) => continue,
                    },
                    () = tokio::time::sleep(Duration::from_millis(500)), if i % 3 == 2 => {
                        if stream.write_all(&[drip[sent % drip.len()]]).await.is_err() {
                            return Some(started.elapsed());
                        }
                        sent += 1;
                    }
                    () = stop.cancelled() => return None,
                }
            }
        }));
    }
    let slowest = probe(&app, "evt_slowloris").await;
    assert!(slowest < HEALTHY, "/healthz took {slowest:?} during the slowloris");
    // Every slow connection is closed by the server, near the 2 s header timeout.
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let mut closed = Vec::new();
    for (i, attacker) in attackers.into_iter().enumerate() {
        tokio::select! {
            held = attacker => closed.push(held.expect("attacker").expect("closed by the server")),
            () = &mut deadline => {
                stop.cancel();
                panic!("slow connections still open 20 s after a 2 s header timeout: first {i} kind {} open {:?}", i % 3, app.state.metrics.connections().open);
            }
        }
    }
    let longest = closed.iter().max().copied().unwrap_or_default();
    assert!(longest < Duration::from_secs(10), "a slow connection was held {longest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_flood_drill_healthz_answers_and_valid_webhooks_are_accepted() {
    let _machine = crate::support::MACHINE.write().await;
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let stop = CancellationToken::new();
    let refused = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(tokio::sync::Notify::new());
    // The largest body the route takes and a header full of signatures that cannot match.
    let body = {
        let pad = "p".repeat(255 * 1024);
        serde_json::to_vec(&serde_json::json!({"id": "evt_forged", "type": "customer.updated", "pad": pad})).expect("json")
    };
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let (stop, refused, answered, body, url) = (stop.clone(), refused.clone(), answered.clone(), body.clone(), app.url("/webhooks/stripe"));
        attackers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let header = format!("t={},{}", chrono::Utc::now().timestamp(), format!("v1={},", "ab".repeat(32)).repeat(60));
            while !stop.is_cancelled() {
                let resp = client.post(&url).header("stripe-signature", &header).body(body.clone()).send().await;
                if resp.is_ok_and(|r| r.status() == StatusCode::BAD_REQUEST) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    answered.notify_waiters();
                }
            }
        }));
    }
    // Let the flood reach the member before probing.
    loop {
        let next = answered.notified();
        if refused.load(Ordering::Relaxed) >= 16 {
            break;
        }
        tokio::time::timeout(Duration::from_secs(30), next).await.expect("the flood is answered");
    }
    let slowest = probe(&app, "evt_flood_probe").await;
    stop.cancel();
    for a in attackers {
        a.await.expect("attacker");
    }
    assert!(slowest < HEALTHY, "/healthz took {slowest:?} during the signature flood");
    assert!(refused.load(Ordering::Relaxed) >= 16);
}
