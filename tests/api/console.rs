//! The operator console (issue 40) driven in a real browser: Debian's chromium through its
//! WebDriver (chromedriver), both installed by the README's test command. Signed in with an
//! operator token, the overview's queue figures are the queue's; a dead job retried from the
//! console runs; a runbook's dry run and then its execute; every dead letter of a search
//! discarded after a confirmation naming the count; an override granted on a customer's page
//! and seen by the tenant's app at `GET /v1/entitlements`; a viewer has no controls and a
//! forged POST of theirs is refused; a form without its CSRF token is refused; an expired
//! session returns to sign-in. A failure keeps a screenshot (target/console-failures/).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use ballast::auth::Scope;
use ballast::auth::operators::{self, Role};
use fantoccini::{Client, Locator};
use futures::FutureExt;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestApp;
use crate::support::browser::Browser;

/// Runs `steps`; on a failure, keeps the page's screenshot and HTML before failing.
async fn with_screenshot_on_failure<F: Future<Output = ()>>(browser: &Browser, name: &str, steps: F) {
    if let Err(panic) = AssertUnwindSafe(steps).catch_unwind().await {
        browser.keep_evidence(name).await;
        std::panic::resume_unwind(panic);
    }
}

/// The text of the element `css` names, once the page shows it. An element found on a page
/// that a redirect then replaced is stale: it is looked up again on the new page (CI failed
/// on such a read between a form's post and its redirect).
async fn text(c: &Client, css: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let found = c.wait().at_most(std::time::Duration::from_secs(15)).for_element(Locator::Css(css)).await;
        match found.unwrap_or_else(|e| panic!("{css}: {e}")).text().await {
            Ok(text) => return text,
            Err(fantoccini::error::CmdError::Standard(e)) if e.error == fantoccini::error::ErrorStatus::StaleElementReference && tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("{css}: text: {e}"),
        }
    }
}

/// Waits (as WebDriver waits: the page is polled) until the browser is at `path` (and `query`).
async fn at(c: &Client, path: &str, query: Option<&str>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let url = c.current_url().await.expect("url");
        if url.path() == path && url.query() == query {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the browser stayed at {url}, not {path}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the element `css` reads `expected`.
async fn reads(c: &Client, css: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{css} reads {now:?}, not {expected:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/sign-in")).await.expect("sign-in page");
    c.find(Locator::Id("token")).await.expect("token field").send_keys(token).await.expect("type");
    c.find(Locator::Id("sign-in")).await.expect("button").click().await.expect("click");
}

/// With BALLAST_CONSOLE_SCREENSHOTS=DIR, the page as README shows it (docs/console-*.png).
async fn screenshot_for_readme(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("BALLAST_CONSOLE_SCREENSHOTS") {
        browser.screenshot(&std::path::Path::new(&dir).join(name)).await;
    }
}

/// The session cookie and the page's form token, to forge requests as the signed-in operator.
async fn session_of(c: &Client) -> (String, String) {
    let cookie = c.get_named_cookie(ballast::console::COOKIE).await.expect("session cookie").value().to_owned();
    let csrf = c.find(Locator::Css("input[name=csrf]")).await.expect("a form").attr("value").await.expect("attr").unwrap_or_default();
    (cookie, csrf)
}

async fn forged(base: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> StatusCode {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let body = form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
    let res = http
        .post(format!("{base}{path}"))
        .header("cookie", format!("{}={cookie}", ballast::console::COOKIE))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("post");
    res.status()
}

fn urlencode(v: &str) -> String {
    v.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn dead_noop(app: &TestApp, payload: serde_json::Value) -> String {
    let id = app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("noop", payload)).await.expect("enqueue").id;
    app.drain().await;
    id.0
}

#[tokio::test]
async fn an_operator_signs_in_retries_runs_a_runbook_discards_and_grants_and_a_viewer_cannot_act() {
    let sim = crate::support::stripe_sim::StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let base = format!("http://{}", app.console.expect("the console listens"));
    let pool = &app.state.system_pool;
    let (_, otto) = operators::add(pool, "otto", Role::Operator, "test").await.expect("operator");
    let (_, vic) = operators::add(pool, "vic", Role::Viewer, "test").await.expect("viewer");
    let tenant = app.tenant("Acme").await;
    let (_, tenant_key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    // A job that died on a transient failure (recorded as the worker records one), and two that can never run.
    let retryable = ballast::queue::JobEnvelope {
        id: ballast::newtypes::JobId::new(),
        kind: "noop".into(),
        tenant: None,
        payload: json!({"sleep_ms": 0}),
        attempt: 5,
        enqueued_at_us: chrono::Utc::now().timestamp_micros(),
        traceparent: None,
        last_error: Some("upstream timed out".into()),
        tracked: false,
        history: Vec::new(),
    };
    let envelope = serde_json::to_value(&retryable).expect("envelope");
    ballast::queue::dead::record(pool, &retryable.id.0, "noop", None, &envelope, 5, "upstream timed out").await.expect("dead letter");
    let never = dead_noop(&app, json!({"sleep_ms": "never"})).await;
    dead_noop(&app, json!({"sleep_ms": "never again"})).await;
    // A paying customer, its events through the inbox.
    let paying = app.tenant("Paying").await;
    let customer = sim.customer(paying, true);
    sim.checkout(paying, &customer, crate::support::stripe_sim::STARTER, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;

    let browser = Browser::start().await;
    let c = browser.client.clone();
    with_screenshot_on_failure(&browser, "operator", async {
        // Not signed in: the console sends you to sign in; a wrong token is refused.
        c.goto(&base).await.expect("open");
        at(&c, "/sign-in", None).await;
        sign_in(&c, &base, "bo_notatoken_x").await;
        assert!(text(&c, "#sign-in-error").await.contains("not an operator token"));
        // Intake requests, their counts added to the fleet's minute as the api role does.
        for _ in 0..20 {
            let res = app.http.get(app.url("/v1/entitlements")).bearer_auth(&tenant_key).send().await.expect("read");
            assert!(res.status().is_success());
        }
        app.state.slo_recorder.publish(&app.state.redis, &app.state.keys, &app.state.cache.stats()).await.expect("publish");
        sign_in(&c, &base, &otto).await;
        assert_eq!(text(&c, "#operator").await, "otto");

        // The overview's figures are the queue's.
        let stats = app.state.queue.stats().await.expect("stats");
        let dead = ballast::queue::dead::open_counts(pool).await.expect("dead");
        let noop = stats.iter().find(|s| s.kind == "noop").expect("noop kind");
        assert_eq!(text(&c, "tr[data-kind=noop] .ready").await, noop.ready.to_string());
        assert_eq!(text(&c, "tr[data-kind=noop] .dead").await, dead["noop"].to_string());
        assert_eq!(dead["noop"], 3);
        // The golden signals: this fleet's worker member, heard from.
        // The golden signals: latency at p95 from the fleet's histogram; this member, its roles
        // and release, heard from.
        let p95 = text(&c, "#p95").await;
        assert!(p95.ends_with(" ms") && p95 != "-", "{p95}");
        assert!(text(&c, "#members .roles").await.contains("api"), "the member's roles");
        assert_eq!(text(&c, "#members .version").await, ballast::RELEASE);
        assert!(text(&c, "#pools").await.contains("in use"));
        screenshot_for_readme(&browser, "console-overview.png").await;

        // The oldest stuck job: why it failed, retried, and it runs.
        c.goto(&format!("{base}/jobs/{}", retryable.id.0)).await.expect("job page");
        assert_eq!(text(&c, "#last-error").await, "upstream timed out");
        c.find(Locator::Id("retry")).await.expect("retry").click().await.expect("click");
        at(&c, "/dead", None).await;
        app.drain().await;
        let still: i64 = sqlx::query_scalar("SELECT count(*) FROM job_dead_letters WHERE job_id = $1 AND retried_at IS NULL").bind(&retryable.id.0).fetch_one(&pool.0).await.expect("count");
        assert_eq!(still, 0, "retried, and it ran without dying again");
        // A job that died in the worker: its attempt, how long it ran and why it failed.
        c.goto(&format!("{base}/jobs/{never}")).await.expect("job page");
        let attempts = c.find_all(Locator::Css("#attempts tr.attempt")).await.expect("attempts");
        assert_eq!(attempts.len(), 1, "one attempt, and it failed");
        let row = attempts[0].text().await.expect("row");
        let error = text(&c, "#last-error").await;
        assert!(row.starts_with("1 ") && row.contains(" ms failed") && !error.is_empty() && error.contains(row.split(" failed ").nth(1).unwrap_or("?").trim()), "{row} / {error}");

        // Every dead letter of a search discarded, after a confirmation naming the count.
        c.goto(&format!("{base}/dead?kind=noop")).await.expect("dead");
        assert!(text(&c, "#match-count").await.starts_with("2 "));
        c.find(Locator::Id("discard-all")).await.expect("discard all").click().await.expect("click");
        assert!(text(&c, "#confirm-text").await.contains("discard all 2"));
        c.find(Locator::Id("confirm")).await.expect("confirm").click().await.expect("click");
        at(&c, "/dead", None).await;
        assert!(text(&c, "#match-count").await.starts_with("0 "));

        // The jobs page finds jobs by state and kind, newest first (no dead noop is open now).
        c.goto(&format!("{base}/jobs?kind=noop&state=dead")).await.expect("jobs");
        text(&c, "#jobs").await;
        assert!(c.find_all(Locator::Css("#jobs tbody tr")).await.expect("rows").is_empty());

        // A runbook: its dry run, then executed; the run's page shows the report.
        c.goto(&format!("{base}/runbooks")).await.expect("runbooks");
        c.find(Locator::Css("#runbook-scheduler-no-leader a")).await.expect("page").click().await.expect("open");
        // The page itself, rendered: its title a heading, its sections headings, its commands code.
        assert!(text(&c, "article.runbook h1").await.to_lowercase().contains("scheduler"));
        assert!(c.find_all(Locator::Css("article.runbook h2")).await.expect("sections").len() >= 5);
        assert!(c.find(Locator::Css("article.runbook pre code")).await.is_ok(), "the command as code");
        c.find(Locator::Id("dry-run")).await.expect("dry run").click().await.expect("click");
        text(&c, "#run-state").await;
        app.drain().await;
        c.refresh().await.expect("reload");
        assert_eq!(text(&c, "#run-state").await, "done");
        assert!(text(&c, "h1").await.contains("dry run"));
        c.goto(&format!("{base}/runbooks/scheduler-no-leader")).await.expect("runbook");
        c.find(Locator::Id("execute")).await.expect("execute").click().await.expect("click");
        text(&c, "#run-state").await;
        app.drain().await;
        c.refresh().await.expect("reload");
        assert_eq!(text(&c, "#run-state").await, "done");
        assert!(text(&c, "h1").await.contains("executed"));
        // A runbook with parameters: a typed, labelled field each, with its description; a value
        // the job cannot take is refused before anything is queued, a good one reaches the job.
        c.goto(&format!("{base}/runbooks/db-pool-exhaustion")).await.expect("runbook");
        let field = c.find(Locator::Id("param-idle_in_transaction_secs")).await.expect("a field per parameter");
        assert_eq!(field.attr("type").await.expect("type").as_deref(), Some("number"));
        assert!(text(&c, "#help-idle_in_transaction_secs").await.contains("Idle-in-transaction sessions older than this"));
        assert!(text(&c, "label[for=param-idle_in_transaction_secs]").await.contains("idle_in_transaction_secs"));
        screenshot_for_readme(&browser, "console-runbook.png").await;
        field.send_keys("-5").await.expect("type");
        c.find(Locator::Id("dry-run")).await.expect("dry run").click().await.expect("click");
        assert!(text(&c, "[role=alert]").await.contains("idle_in_transaction_secs"), "the refusal names the parameter");
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_runs WHERE kind = 'db.sessions'").fetch_one(&pool.0).await.expect("runs");
        assert_eq!(queued, 0, "nothing queued for a bad value");
        c.goto(&format!("{base}/runbooks/db-pool-exhaustion")).await.expect("runbook");
        c.find(Locator::Id("param-idle_in_transaction_secs")).await.expect("field").send_keys("45").await.expect("type");
        c.find(Locator::Id("dry-run")).await.expect("dry run").click().await.expect("click");
        text(&c, "#run-state").await;
        app.drain().await;
        let asked: Option<i64> = sqlx::query_scalar("SELECT (params->'params'->>'idle_in_transaction_secs')::bigint FROM audit_log WHERE action = 'runbook.db.sessions'").fetch_one(&pool.0).await.expect("audited");
        assert_eq!(asked, Some(45), "the form's number reached the job as a number");

        // A customer's override, granted on its page, seen by the tenant's app.
        c.goto(&format!("{base}/customers/{tenant}")).await.expect("customer");
        c.find(Locator::Css("#override-target option[value=sso]")).await.expect("sso").click().await.expect("choose");
        c.find(Locator::Id("override-reason")).await.expect("reason").send_keys("sales-assist pilot").await.expect("type");
        c.find(Locator::Id("override-submit")).await.expect("submit").click().await.expect("click");
        reads(&c, "tr[data-feature=sso] .source", "override").await;

        // Support access: a read-only session opened with a reason, its token shown once.
        c.find(Locator::Id("support-reason")).await.expect("reason").send_keys("ticket 4711").await.expect("type");
        c.find(Locator::Id("support-open")).await.expect("open").click().await.expect("click");
        let token = text(&c, "#support-token").await;
        assert!(token.starts_with("bs_"), "{token}");
        let (status, _) = app.call(Method::GET, "/v1/entitlements", &token, None).await;
        assert_eq!(status, StatusCode::OK, "the session reads as the tenant");

        // A paying customer's page: its plan, MRR and the Stripe events the inbox applied.
        c.goto(&format!("{base}/customers/{paying}")).await.expect("customer");
        assert_eq!(text(&c, "#plan").await, "starter");
        assert!(text(&c, "#inbox").await.contains("customer.subscription.created"));
        screenshot_for_readme(&browser, "console-customer.png").await;
        let (status, sso) = app.call(Method::GET, "/v1/entitlements/sso", &tenant_key, None).await;
        assert_eq!((status, sso["entitlement"]["enabled"].as_bool(), sso["entitlement"]["source"].as_str()), (StatusCode::OK, Some(true), Some("override")));

        // A form without its CSRF token is refused, even with the operator's session.
        let (cookie, csrf) = session_of(&c).await;
        assert_eq!(forged(&base, "/dead/act", &cookie, &[("action", "discard"), ("kind", "noop"), ("expected", "0")]).await, StatusCode::FORBIDDEN);
        assert_eq!(forged(&base, "/dead/act", &cookie, &[("csrf", "not-the-token"), ("action", "discard"), ("expected", "0")]).await, StatusCode::FORBIDDEN);
        assert!(!csrf.is_empty());

        // Every action is audited with the operator's name.
        let actions: Vec<String> = sqlx::query_scalar("SELECT DISTINCT action FROM audit_log WHERE actor = 'otto' ORDER BY 1").fetch_all(&pool.0).await.expect("audit");
        for expected in ["console.sign_in", "jobs.discard", "jobs.retry", "overrides.set", "runbook.scheduler.inspect"] {
            assert!(actions.iter().any(|a| a == expected), "{expected} not in {actions:?}");
        }

        // Signed out: back to sign-in. A viewer has no controls and a forged action is refused.
        c.find(Locator::Id("sign-out")).await.expect("sign out").click().await.expect("click");
        at(&c, "/sign-in", None).await;
        sign_in(&c, &base, &vic).await;
        reads(&c, "#operator", "vic").await;
        let letter = dead_noop(&app, json!({"sleep_ms": "still never"})).await;
        c.goto(&format!("{base}/dead")).await.expect("dead");
        assert!(c.find(Locator::Css("button.retry")).await.is_err(), "a viewer sees no retry control");
        assert!(c.find(Locator::Id("discard-all")).await.is_err());
        c.goto(&format!("{base}/customers/{tenant}")).await.expect("customer");
        assert!(c.find(Locator::Id("override-form")).await.is_err(), "a viewer sees no override form");
        let (cookie, csrf) = session_of(&c).await;
        let dead_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM job_dead_letters WHERE job_id = $1").bind(&letter).fetch_one(&pool.0).await.expect("id");
        let status = forged(&base, "/dead/act", &cookie, &[("csrf", &csrf), ("action", "discard"), ("id", &dead_id.to_string())]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a viewer's forged POST");

        // An expired session returns to sign-in.
        sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'").execute(&pool.0).await.expect("expire");
        c.goto(&base).await.expect("open");
        at(&c, "/sign-in", None).await;
    })
    .await;
    browser.close().await;
}

/// The fleet's pages in the browser: a cron entry run now (queued, then run, audited); an
/// SLO's seven days charted against its budget; the maintenance services and the fleet's
/// alerts, open and resolved; a viewer sees no "run now".
#[tokio::test]
async fn schedules_run_now_slos_chart_their_week_and_maintenance_lists_services_and_alerts() {
    let app = TestApp::builder().spawn().await;
    let base = format!("http://{}", app.console.expect("the console listens"));
    let pool = &app.state.system_pool;
    let (_, otto) = operators::add(pool, "otto", Role::Operator, "test").await.expect("operator");
    let (_, vic) = operators::add(pool, "vic", Role::Viewer, "test").await.expect("viewer");
    // Yesterday's intake: one bad request in a hundred (SLO counts as the api role writes them).
    sqlx::query("INSERT INTO slo_minutes (slo, minute, source, good, valid) VALUES ('intake-availability', date_trunc('minute', now() - interval '1 day'), 'api', 99, 100)")
        .execute(&pool.0)
        .await
        .expect("slo minute");
    sqlx::query(
        "INSERT INTO fleet_alerts (alert_key, rule, state, since, value, threshold, summary, evaluated_at) VALUES
         ('queue_age:email.send', 'queue_age', 'firing', now(), 900, 300, 'email.send waits 900 s', now()),
         ('dead_letters', 'dead_letters', 'ok', now() - interval '1 hour', 0, 1, 'no dead letters', now())",
    )
    .execute(&pool.0)
    .await
    .expect("alerts");

    let browser = Browser::start().await;
    let c = browser.client.clone();
    with_screenshot_on_failure(&browser, "fleet", async {
        sign_in(&c, &base, &otto).await;
        reads(&c, "#operator", "otto").await;
        c.goto(&format!("{base}/schedules")).await.expect("schedules");
        // Held (the kind paused) so its page finds it queued, however fast the workers are.
        app.state.queue.set_paused("cache.warm", true).await.expect("pause");
        c.find(Locator::Css("tr[data-kind='cache.warm'] .run-now")).await.expect("run now").click().await.expect("click");
        reads(&c, "#where", "queued").await;
        app.state.queue.set_paused("cache.warm", false).await.expect("resume");
        app.drain().await;
        let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'schedules.run_now' AND actor = 'otto'").fetch_one(&pool.0).await.expect("audit");
        assert_eq!(audited, 1);

        // A kind paused from the queues page: its job waits while another kind's runs; resumed,
        // it runs, and the page counts it in the last hour.
        c.goto(&format!("{base}/queues")).await.expect("queues");
        c.find(Locator::Css("tr[data-kind=noop] .toggle")).await.expect("pause").click().await.expect("click");
        reads(&c, "tr[data-kind=noop] .state", "paused Resume").await;
        let waiting = app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("noop", json!({"sleep_ms": 0}))).await.expect("enqueue").id;
        let other = app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("test.flaky", json!({"fail_while_key": "console:never-set"}))).await.expect("enqueue").id;
        let done = |events: &crate::support::Events, id: &ballast::newtypes::JobId| events.finished.lock().expect("lock").iter().any(|(e, _)| e.id == *id);
        app.events.wait_until("the other kind's job", std::time::Duration::from_secs(30), |e| done(e, &other)).await;
        assert!(!app.events.started.lock().expect("lock").iter().any(|e| e.id == waiting), "a paused kind's job is not fetched");
        let noop = app.state.queue.stats().await.expect("stats").into_iter().find(|s| s.kind == "noop").expect("noop");
        assert_eq!((noop.ready, noop.paused), (1, true));
        c.find(Locator::Css("tr[data-kind=noop] .toggle")).await.expect("resume").click().await.expect("click");
        reads(&c, "tr[data-kind=noop] .state", "running Pause").await;
        app.drain().await;
        assert!(done(&app.events, &waiting), "resumed, it runs");
        app.state.metrics.job_minutes().flush(&app.state.redis, &app.state.keys).await.expect("flush");
        c.refresh().await.expect("reload");
        assert_eq!(text(&c, "tr[data-kind=noop] .processed").await, "1");
        let audited: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE action IN ('jobs.pause', 'jobs.resume') AND actor = 'otto' ORDER BY id").fetch_all(&pool.0).await.expect("audit");
        assert_eq!(audited, ["jobs.pause", "jobs.resume"]);

        c.goto(&format!("{base}/slos")).await.expect("slos");
        assert!(text(&c, "#slo-intake-availability").await.contains("intake-availability"));
        let bar = c.find(Locator::Css("section[aria-labelledby=slo-intake-availability] rect title")).await.expect("a day's bar");
        assert!(bar.html(true).await.expect("title").contains("99 of 100 good"));

        c.goto(&format!("{base}/maintenance")).await.expect("maintenance");
        assert_eq!(text(&c, "tr[data-alert='queue_age:email.send'] .state").await, "firing");
        assert_eq!(text(&c, "tr[data-alert=dead_letters] .state").await, "resolved");
        let rows = c.find_all(Locator::Css("#services tbody tr")).await.expect("services");
        assert_eq!(rows.len(), ballast::maintenance::services().len());

        c.find(Locator::Id("sign-out")).await.expect("sign out").click().await.expect("click");
        at(&c, "/sign-in", None).await;
        sign_in(&c, &base, &vic).await;
        reads(&c, "#operator", "vic").await;
        c.goto(&format!("{base}/schedules")).await.expect("schedules");
        text(&c, "#schedules").await;
        assert!(c.find(Locator::Css(".run-now")).await.is_err(), "a viewer sees no run-now control");

        // At a phone's width every page fits: nothing wider than the screen but a table's own
        // scroll box, and the navigation wraps.
        c.set_window_size(390, 844).await.expect("phone width");
        for path in ["/", "/queues", "/jobs", "/dead", "/schedules", "/runbooks", "/runbooks/db-pool-exhaustion", "/slos", "/maintenance", "/customers"] {
            c.goto(&format!("{base}{path}")).await.expect("page");
            let widths = c.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.expect("widths");
            let (page, screen) = (widths[0].as_i64().unwrap_or(i64::MAX), widths[1].as_i64().unwrap_or(0));
            assert!(page <= screen, "{path}: {page} px wide on a {screen} px screen");
        }
        screenshot_for_readme(&browser, "console-phone.png").await;
    })
    .await;
    browser.close().await;
}

/// The jobs page's search: tracked jobs in any state and open dead letters, filtered by kind,
/// state, tenant, error text and time, newest first, paged by a cursor that reads back.
#[tokio::test]
async fn job_search_filters_and_pages_by_cursor_over_statuses_and_dead_letters() {
    use ballast::jobs::search::{JobSearch, SearchError, search};
    let app = TestApp::builder().spawn().await;
    let pool = &app.state.system_pool;
    let tenant = app.tenant("Searched").await;
    for (i, (kind, state, error)) in [("email.send", "done", None), ("email.send", "retrying", Some("smtp 451")), ("webhook.deliver", "queued", None), ("email.send", "dead", Some("smtp 550 no such user"))].iter().enumerate() {
        sqlx::query("INSERT INTO job_status (id, tenant_id, kind, state, last_error, created_at, id_at) VALUES ($1, $2, $3, $4, $5, now() - make_interval(mins => $6), ballast_job_id_time($1))")
            .bind(format!("job_{i}"))
            .bind(tenant)
            .bind(kind)
            .bind(state)
            .bind(error)
            .bind(10 - i as i32)
            .execute(&pool.0)
            .await
            .expect("status");
    }
    dead_noop(&app, json!({"sleep_ms": "never"})).await;

    let all = search(pool, &JobSearch::default(), None, 50).await.expect("all");
    let ids: Vec<&str> = all.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!(&ids[1..], ["job_3", "job_2", "job_1", "job_0"], "newest first, the dead noop newest of all");
    let smtp = search(pool, &JobSearch { error: Some("SMTP".into()), kind: Some("email.send".into()), ..Default::default() }, None, 50).await.expect("smtp");
    assert_eq!(smtp.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["job_3", "job_1"]);
    let dead = search(pool, &JobSearch { state: Some("dead".into()), ..Default::default() }, None, 50).await.expect("dead");
    assert_eq!(dead.jobs.len(), 2, "the dead status and the dead noop");
    let theirs = search(pool, &JobSearch { tenant: Some(tenant), ..Default::default() }, None, 50).await.expect("tenant");
    assert_eq!(theirs.jobs.len(), 4);

    // Pages of two add up to the whole, in order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = search(pool, &JobSearch::default(), cursor.as_deref(), 2).await.expect("page");
        paged.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    assert!(matches!(search(pool, &JobSearch::default(), Some("not-a-cursor"), 2).await, Err(SearchError::BadCursor)));
    assert!(matches!(search(pool, &JobSearch { state: Some("lost".into()), ..Default::default() }, None, 2).await, Err(SearchError::BadState)));
}
