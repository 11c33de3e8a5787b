//! The cache layer: stale-while-revalidate, stale-if-error, fleet-wide single flight,
//! invalidation after a webhook, the warm job and the after-deploy reshape, and the cached
//! catalogue and flags over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ballast::auth::Scope;
use ballast::cache::{Cache, CacheOptions};
use ballast::clock::Clock;
use ballast::redis_keys::{RedisKeys, TENANT_ENTITLEMENTS};
use serde_json::Value;
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

const LIMIT: Duration = Duration::from_secs(10);

/// A cache over its own Redis connection in namespace `ns`, as one fleet member holds it.
async fn member_cache(ns: &str, clock: &Clock) -> Cache {
    let (conn, cluster) = crate::support::shared_redis();
    let options = CacheOptions { wait: Duration::from_secs(10), ..CacheOptions::default() };
    Cache::new(conn, RedisKeys::new(ns, cluster), clock.clone(), options)
}

fn namespace() -> String {
    format!("c{}", &Uuid::new_v4().simple().to_string()[..10])
}

/// Waits (polling, bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    crate::support::procs::until(what, LIMIT, || std::future::ready(cond())).await;
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.unwrap_or_else(|_| panic!("{what} did not answer"))
}

fn ok(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

fn past_ttl() -> Duration {
    TENANT_ENTITLEMENTS.ttl.expect("ttl") + Duration::from_secs(1)
}

fn past_stale_window() -> Duration {
    TENANT_ENTITLEMENTS.stale.expect("stale") + Duration::from_secs(1)
}

#[tokio::test]
async fn a_stale_value_is_served_at_once_while_one_refresh_runs() {
    let clock = Clock::manual();
    let cache = member_cache(&namespace(), &clock).await;
    let key = cache.keys().tenant_entitlements(ballast::newtypes::TenantId(Uuid::new_v4()));
    let first: String = cache.get(&TENANT_ENTITLEMENTS, key.clone(), || async { ok("v1") }).await.expect("load");
    assert_eq!(first, "v1");
    clock.advance(past_ttl());

    // The refresh's loader blocks until released: the read must not wait for it.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut finished = cache.refreshes_finished();
    let stale: String = within("a stale read", cache.get(&TENANT_ENTITLEMENTS, key.clone(), move || async move {
        released.await.ok();
        ok("v2")
    }))
    .await
    .expect("stale");
    assert_eq!(stale, "v1");
    // A second read during the refresh is stale too and starts no second load.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let again: String = within("a second stale read", cache.get(&TENANT_ENTITLEMENTS, key.clone(), move || async move {
        c.fetch_add(1, Ordering::SeqCst);
        ok("v3")
    }))
    .await
    .expect("stale again");
    assert_eq!(again, "v1");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "one refresh at a time");
    let s = cache.stats();
    assert_eq!((s.stale_served, s.refreshes, s.misses), (2, 0, 1), "{s:?}");

    release.send(()).expect("release");
    within("the refresh", finished.wait_for(|n| *n >= 1)).await.expect("refreshed");
    let fresh: String = cache.get(&TENANT_ENTITLEMENTS, key, || async { Err::<String, _>("must not load") }).await.expect("fresh");
    assert_eq!(fresh, "v2");
    assert_eq!(cache.stats().refreshes, 1);
    assert_eq!(cache.stats().hits, 1);
}

#[tokio::test]
async fn a_failing_loader_serves_the_old_value_and_counts_it() {
    let clock = Clock::manual();
    let cache = member_cache(&namespace(), &clock).await;
    let key = cache.keys().tenant_entitlements(ballast::newtypes::TenantId(Uuid::new_v4()));
    let failing = || async { Err::<String, _>("postgres is down") };
    cache.get(&TENANT_ENTITLEMENTS, key.clone(), || async { ok("v1") }).await.expect("load");

    // Stale window: served, the background refresh fails, the value stays.
    clock.advance(past_ttl());
    let mut finished = cache.refreshes_finished();
    assert_eq!(cache.get(&TENANT_ENTITLEMENTS, key.clone(), failing).await.expect("stale"), "v1");
    within("the refresh", finished.wait_for(|n| *n >= 1)).await.expect("refresh ended");
    assert_eq!(cache.stats().refresh_errors, 1);

    // Past the stale window the read loads in the foreground; its failure serves the old value.
    clock.advance(past_stale_window());
    assert_eq!(cache.get(&TENANT_ENTITLEMENTS, key.clone(), failing).await.expect("stale-if-error"), "v1");
    let s = cache.stats();
    assert_eq!((s.stale_if_error, s.load_errors), (1, 2), "{s:?}");

    // An invalidated value is known to be wrong: it is never served, even on error.
    cache.invalidate(std::slice::from_ref(&key)).await.expect("invalidate");
    let err = cache.get(&TENANT_ENTITLEMENTS, key.clone(), failing).await.expect_err("nothing to serve");
    assert!(err.to_string().contains("postgres is down"), "{err}");
    // And the source coming back is read at once.
    assert_eq!(cache.get(&TENANT_ENTITLEMENTS, key, || async { ok("v2") }).await.expect("load"), "v2");
}

#[tokio::test]
async fn a_hundred_concurrent_misses_on_two_members_call_the_loader_once() {
    let (ns, clock) = (namespace(), Clock::manual());
    let members = [member_cache(&ns, &clock).await, member_cache(&ns, &clock).await];
    let key = members[0].keys().tenant_entitlements(ballast::newtypes::TenantId(Uuid::new_v4()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let reads: Vec<_> = (0..100)
        .map(|i| {
            let (cache, key, calls, mut released) = (members[i % 2].clone(), key.clone(), calls.clone(), released.clone());
            tokio::spawn(async move {
                cache
                    .get(&TENANT_ENTITLEMENTS, key, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        released.wait_for(|r| *r).await.ok();
                        ok("loaded once")
                    })
                    .await
            })
        })
        .collect();
    // Every read has missed and all but the loader are waiting before the loader may answer.
    let total = |f: fn(&ballast::cache::CacheStats) -> u64| members.iter().map(|m| f(&m.stats())).sum::<u64>();
    until("100 misses, 99 waiting", || total(|s| s.misses) == 100 && total(|s| s.waits) == 99).await;
    release.send(true).expect("release");
    for read in reads {
        assert_eq!(within("a read", read).await.expect("task").expect("value"), "loaded once");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the loader ran once across both members");
    assert_eq!(total(|s| s.wait_timeouts), 0);
}

#[tokio::test]
async fn a_load_that_began_before_an_invalidation_does_not_store_its_answer() {
    let clock = Clock::manual();
    let cache = member_cache(&namespace(), &clock).await;
    let key = cache.keys().tenant_entitlements(ballast::newtypes::TenantId(Uuid::new_v4()));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get(&TENANT_ENTITLEMENTS, key, move || async move {
                    released.await.ok();
                    ok("read before the commit")
                })
                .await
        })
    };
    until("the load to start", || cache.stats().loads == 1).await;
    // The commit happens and invalidates while that load is in flight.
    cache.invalidate(std::slice::from_ref(&key)).await.expect("invalidate");
    release.send(()).expect("release");
    assert_eq!(within("the reader", reader).await.expect("task").expect("value"), "read before the commit");
    assert_eq!(cache.stats().stores_skipped, 1);
    let next: String = cache.get(&TENANT_ENTITLEMENTS, key, || async { ok("after the commit") }).await.expect("next");
    assert_eq!(next, "after the commit", "the old answer was not cached");
}

async fn get_json(app: &TestApp, path: &str, key: Option<&str>) -> (reqwest::StatusCode, Value) {
    let mut req = app.http.get(app.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("json");
    if let Err(drift) = crate::support::openapi_check::check(&reqwest::Method::GET, path, status.as_u16(), &body) {
        panic!("the API drifted from its OpenAPI document: {drift}");
    }
    (status, body)
}

#[tokio::test]
async fn entitlement_reads_come_from_the_cache_and_a_webhook_change_is_visible_to_the_next_read() {
    let sim = StripeSim::start().await;
    // A manual clock that never moves: no TTL can expire during this test.
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).manual_clock().spawn().await;
    let tenant = app.tenant("cached").await;
    let (_, key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    let customer = sim.customer(tenant, true);
    let sub = sim.checkout(tenant, &customer, STARTER, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;

    let (s, body) = get_json(&app, "/v1/entitlements/projects", Some(&key)).await;
    assert_eq!((s.as_u16(), &body["entitlement"]["limit"]), (200, &Value::from(3)), "{body}");
    let before = app.state.cache.stats();
    let (_, body) = get_json(&app, "/v1/entitlements", Some(&key)).await;
    assert!(body["entitlements"].as_array().is_some_and(|a| a.len() == 5), "{body}");
    let after = app.state.cache.stats();
    assert_eq!((after.hits - before.hits, after.loads - before.loads), (1, 0), "the second read is a cache hit");

    sim.change_price(&sub, PRO, crate::support::stripe_sim::schedule::Proration::AlwaysInvoice);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    let (_, body) = get_json(&app, "/v1/entitlements/projects", Some(&key)).await;
    assert_eq!(body["entitlement"]["limit"], 50, "the upgrade is visible without waiting for a TTL: {body}");
    assert_eq!(body["entitlement"]["plan_id"], "pro");
}

async fn seed_entitlement(app: &TestApp, tenant: Uuid, limit: i64) {
    sqlx::query("INSERT INTO entitlements (tenant_id, feature, enabled, limit_value, source, plan_id) VALUES ($1, 'projects', true, $2, 'plan', 'starter')")
        .bind(tenant)
        .bind(limit)
        .execute(&app.state.system_pool.0)
        .await
        .expect("entitlement");
}

/// Redis forgets its scripts when a node restarts (or a new one joins): a warm still stores
/// every value. On a cluster a batch's script load reached one node only, and the catalogue's
/// node, never having run the script, refused the store with NOSCRIPT.
#[tokio::test]
async fn a_warm_stores_every_value_after_redis_forgot_its_scripts() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("t").await;
    seed_entitlement(&app, tenant, 5).await;
    for client in app.state.redis.master_clients(&app.state.redis_client).await.expect("masters") {
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect to a master");
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("script flush");
    }
    let report = ballast::billing::warm::run(&app.state.warm_sources()).await.expect("warm");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!((report.catalogue.stored, report.flags.stored, report.entitlements.stored), (1, 1, 1), "{report:?}");
    let mut conn = app.state.redis.clone();
    let cached: bool = redis::cmd("EXISTS").arg(app.state.keys.plan_catalogue()).query_async(&mut conn).await.expect("exists");
    assert!(cached, "the plan catalogue is cached");
}

#[tokio::test]
async fn the_warm_job_fills_every_active_tenant_so_reads_are_hits() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).manual_clock().spawn().await;
    let mut keys = Vec::new();
    for n in 0..3 {
        let t = app.tenant(&format!("t{n}")).await;
        seed_entitlement(&app, t, 10 + n).await;
        keys.push((app.key(Some(t), &[Scope::EntitlementsRead]).await.1, 10 + n));
    }
    let closed = app.tenant("closed").await;
    sqlx::query("UPDATE tenants SET status = 'closed' WHERE id = $1").bind(closed).execute(&app.state.system_pool.0).await.expect("close");

    let queued = app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("cache.warm", serde_json::json!({}))).await.expect("enqueue");
    assert!(!queued.duplicate);
    app.drain().await;
    let report = ballast::billing::warm::run(&app.state.warm_sources()).await.expect("warm again");
    assert_eq!((report.tenants, report.entitlements.stored, report.batches), (3, 3, 1), "{report:?}");
    assert_eq!((report.flags.stored, report.catalogue.stored), (1, 1));
    assert!(report.errors.is_empty(), "{report:?}");

    let before = app.state.cache.stats();
    for (key, limit) in &keys {
        let (_, body) = get_json(&app, "/v1/entitlements/projects", Some(key)).await;
        assert_eq!(body["entitlement"]["limit"], *limit, "{body}");
    }
    let after = app.state.cache.stats();
    assert_eq!((after.hits - before.hits, after.misses - before.misses), (3, 0), "{after:?}");
    let mut conn = app.state.redis.clone();
    let closed_cached: bool =
        redis::AsyncCommands::exists(&mut conn, app.state.keys.tenant_entitlements(ballast::newtypes::TenantId(closed))).await.expect("exists");
    assert!(!closed_cached, "closed tenants are not warmed");
}

#[tokio::test]
async fn reshape_counts_in_a_dry_run_then_removes_old_shapes_in_batches() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let tenants = [app.tenant("a").await, app.tenant("b").await];
    for t in tenants {
        seed_entitlement(&app, t, 5).await;
    }
    ballast::billing::warm::run(&app.state.warm_sources()).await.expect("warm");
    // 600 keys of an older entitlement shape (more than one SCAN batch) and an old catalogue.
    let ns = app.state.keys.namespace().to_owned();
    let mut conn = app.state.redis.clone();
    let mut pipe = redis::pipe();
    for _ in 0..600 {
        pipe.cmd("SET").arg(format!("{ns}:ent:v0:{}", Uuid::new_v4())).arg("{}").ignore();
    }
    pipe.cmd("SET").arg(format!("{ns}:plans:v0")).arg("{}").ignore();
    let _: () = pipe.query_async(&mut conn).await.expect("plant");

    let out = app.cli(&["cache", "reshape", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dry: Value = serde_json::from_slice(&out.stdout).expect("json");
    let family = |r: &Value, f: &str| r["families"].as_array().and_then(|a| a.iter().find(|x| x["family"] == f).cloned()).expect("family");
    assert_eq!(dry["executed"], false);
    assert_eq!((family(&dry, "entitlements")["old"].as_u64(), family(&dry, "entitlements")["current"].as_u64()), (Some(600), Some(2)));
    assert_eq!(family(&dry, "plans")["old"], 1);
    let planted: usize = app.state.redis.scan(&format!("{ns}:ent:v0:*")).await.expect("scan").len();
    assert_eq!(planted, 600, "a dry run deletes nothing");

    let out = app.cli(&["cache", "reshape", "--execute", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(family(&done, "entitlements")["deleted"], 600);
    assert_eq!(family(&done, "plans")["deleted"], 1);
    assert_eq!(family(&done, "entitlements")["current"], 2, "the current shape stays");
    assert!(app.state.redis.scan(&format!("{ns}:ent:v0:*")).await.expect("scan").is_empty());
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'runbook.cache.reshape' AND params->>'execute' = 'true'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("audit");
    assert_eq!(audited, 1, "the executed run is audited");
}

#[tokio::test]
async fn the_catalogue_is_read_from_stripe_once_and_served_through_an_outage() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).manual_clock().spawn().await;
    let (s, body) = get_json(&app, "/v1/plans", None).await;
    assert_eq!(s, 200, "{body}");
    let price = |b: &Value, plan: &str| {
        b["plans"].as_array().and_then(|a| a.iter().find(|p| p["id"] == plan)).map(|p| p["prices"][0]["unit_amount"].clone()).expect("plan")
    };
    assert_eq!((price(&body, "starter"), price(&body, "pro")), (Value::from(STARTER.2), Value::from(PRO.2)));
    assert_eq!(body["plans"][0]["prices"][0]["amount_source"], "stripe", "{body}");
    let reads = sim.price_reads();
    get_json(&app, "/v1/plans", None).await;
    assert_eq!(sim.price_reads(), reads, "the second answer came from the cache");

    // Stripe fails; past the TTL and the stale window the old catalogue is still served.
    sim.set_prices_down(true);
    let spec = ballast::redis_keys::PLAN_CATALOGUE;
    app.clock().advance(spec.ttl.expect("ttl") + spec.stale.expect("stale") + Duration::from_secs(1));
    let (s, body) = get_json(&app, "/v1/plans", None).await;
    assert_eq!((s.as_u16(), price(&body, "pro")), (200, Value::from(PRO.2)), "{body}");
    assert!(sim.price_reads() > reads, "the cache did try Stripe");
    assert_eq!(app.state.cache.stats().stale_if_error, 1);
}

#[tokio::test]
async fn without_a_stripe_key_the_catalogue_says_why_it_has_no_amounts() {
    let app = TestApp::builder().env("STRIPE_SECRET_KEY", "").spawn().await;
    let (s, body) = get_json(&app, "/v1/plans", None).await;
    assert_eq!(s, 200, "{body}");
    let price = &body["plans"][0]["prices"][0];
    assert_eq!((price["unit_amount"].clone(), price["amount_source"].as_str()), (Value::Null, Some("unavailable")), "{body}");
    assert!(price["amount_missing"].as_str().is_some_and(|m| m.contains("STRIPE_SECRET_KEY")), "{body}");
}

#[tokio::test]
async fn a_flag_change_is_visible_to_the_next_read() {
    let app = TestApp::builder().manual_clock().spawn().await;
    let tenant = app.tenant("flags").await;
    let (_, key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    let (s, body) = get_json(&app, "/v1/flags", Some(&key)).await;
    assert_eq!((s.as_u16(), &body["flags"]), (200, &serde_json::json!({})), "{body}");

    let out = app.cli(&["flags", "set", "new-editor", "--on", "--description", "The new editor"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, body) = get_json(&app, "/v1/flags", Some(&key)).await;
    assert_eq!(body["flags"]["new-editor"], true, "{body}");

    let out = app.cli(&["flags", "set", "new-editor", "--rollout", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, body) = get_json(&app, "/v1/flags", Some(&key)).await;
    assert_eq!(body["flags"]["new-editor"], false, "{body}");

    let out = app.cli(&["flags", "set", "Bad Name", "--on"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a-z"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = app.cli(&["flags", "set", "x", "--rollout", "101"]);
    assert!(!out.status.success());
}
