//! Three scheduler processes: each tick is enqueued once; killing the leader hands the lease
//! to another member within the lease TTL.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast::app::Role;
use ballast::newtypes::JobKind;
use redis::AsyncCommands;

use crate::support::TestApp;

const EVERY_SECOND: &str = r#"kind = "noop"
description = "ticks every second in this test"
concurrency = 1
timeout_secs = 5
max_attempts = 1
backoff = { base_secs = 1, max_secs = 1 }
schedule = "* * * * * *"
"#;

struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_for<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn three_schedulers_tick_once_and_fail_over_within_the_lease() {
    // The in-process app only reads the queue; the three members are real processes.
    let app = TestApp::builder().roles(&[]).job_entry("noop", EVERY_SECOND).spawn().await;
    let lease_secs = 2u64;
    let mut members = Members(Vec::new());
    for _ in 0..3 {
        let child = Command::new(env!("CARGO_BIN_EXE_ballast"))
            .args(["serve", "--roles", "scheduler"])
            .env_clear()
            .envs(&app.env)
            .env("BALLAST_SCHEDULER_LEASE_SECS", lease_secs.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn scheduler");
        members.0.push(child);
    }
    let kind = JobKind::from("noop");
    let queue = app.state.queue.clone();
    let count = || {
        let queue = queue.clone();
        let kind = kind.clone();
        async move { queue.envelopes(&kind).await.expect("envelopes").len() }
    };
    wait_for("three ticks", Duration::from_secs(20), async || (count().await >= 3).then_some(())).await;

    // Kill the leader (its member id carries its pid).
    let mut redis = app.state.redis.clone();
    let leader: String = redis.get(app.state.keys.scheduler_leader()).await.expect("leader");
    let idx = members.0.iter().position(|c| leader.contains(&format!("-{}-", c.id()))).expect("leader is one of ours");
    let killed_at = Instant::now();
    members.0[idx].kill().expect("kill -9 leader");
    members.0[idx].wait().expect("reap");
    let key = app.state.keys.scheduler_leader();
    let new_leader: String = wait_for("a new leader", Duration::from_secs(10), async || {
        let current: Option<String> = redis.get(&key).await.expect("get");
        current.filter(|c| *c != leader)
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(takeover <= Duration::from_millis(lease_secs * 1000 + 1000), "takeover took {takeover:?}");
    assert_ne!(new_leader, leader);

    let before = count().await;
    wait_for("ticks after takeover", Duration::from_secs(20), async || (count().await >= before + 2).then_some(())).await;

    // Every tick is queued once: ids are kind@instant, one per distinct second.
    let envelopes = app.state.queue.envelopes(&kind).await.expect("envelopes");
    let ids: Vec<String> = envelopes.iter().map(|e| e.id.0.clone()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a tick was queued twice: {ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("noop@")), "{ids:?}");
    let _ = Role::Api;
}
