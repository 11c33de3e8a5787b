//! The customer list (issue 39): each tenant's plan, subscription status, MRR per currency from
//! its mirrored items (monthly, yearly, several items, two currencies — through the Stripe
//! simulator's real events), dunning state and last API call; filters, sorts and a cursor that
//! pages without OFFSET; from the CLI with --json.

use ballast::auth::Scope;
use serde_json::Value;

use crate::support::TestApp;
use crate::support::stripe_sim::{EXTRA_SEATS, PRO, PRO_EUR, STARTER, STARTER_YEARLY, StripeSim};

async fn subscribe(app: &TestApp, sim: &StripeSim, name: &str, price: (&'static str, &'static str, i64)) -> (uuid::Uuid, String) {
    let tenant = app.tenant(name).await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, price, None);
    deliver(app, sim).await;
    (tenant, customer)
}

async fn deliver(app: &TestApp, sim: &StripeSim) {
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
}

fn list(app: &TestApp, args: &[&str]) -> Value {
    let mut all = vec!["--json", "tenants", "list"];
    all.extend_from_slice(args);
    let out = app.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn names(page: &Value) -> Vec<String> {
    page["customers"].as_array().expect("customers").iter().map(|c| c["name"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn the_list_shows_each_tenants_mrr_in_its_currency_and_pages_filters_and_sorts() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (monthly, _) = subscribe(&app, &sim, "Monthly", STARTER).await;
    subscribe(&app, &sim, "Yearly", STARTER_YEARLY).await;
    subscribe(&app, &sim, "Euro", PRO_EUR).await;
    let (_, seats_customer) = subscribe(&app, &sim, "Seats", PRO).await;
    let sub = sim.subscriptions_of(&seats_customer).pop().expect("subscription");
    sim.add_addon(&sub, EXTRA_SEATS, 3, false);
    deliver(&app, &sim).await;
    let (dunned, _) = subscribe(&app, &sim, "Dunned", STARTER).await;
    app.tenant("Prospect").await;
    // An open dunning case that restricts (dunning's own table; its lifecycle is tested there).
    sqlx::query("INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, opened_at, restricted) VALUES ($1, 'in_dunned', 'cus_dunned', now(), true)")
        .bind(dunned)
        .execute(&app.state.system_pool.0)
        .await
        .expect("case");

    let all = list(&app, &[]);
    let by_name = |n: &str| all["customers"].as_array().expect("list").iter().find(|c| c["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!(by_name("Monthly")["mrr"], serde_json::json!({"usd": 2000}));
    assert_eq!(by_name("Yearly")["mrr"], serde_json::json!({"usd": 1667}), "20,000 a year is 1,666.67 a month");
    assert_eq!(by_name("Euro")["mrr"], serde_json::json!({"eur": 4500}));
    assert_eq!(by_name("Seats")["mrr"], serde_json::json!({"usd": 5000 + 3 * 500}), "the plan and three add-on units");
    assert_eq!(by_name("Prospect")["mrr"], serde_json::json!({}));
    assert_eq!((by_name("Seats")["plan_id"].as_str(), by_name("Seats")["subscription_status"].as_str()), (Some("pro"), Some("active")));
    assert_eq!((by_name("Dunned")["dunning"].as_str(), by_name("Monthly")["dunning"].as_str()), (Some("restricted"), Some("none")));
    assert_eq!(by_name("Prospect")["subscription_status"], Value::Null);
    // Highest MRR first (the largest currency's amount; equal amounts by id), no revenue last.
    let order = names(&all);
    assert_eq!(&order[..2], ["Seats", "Euro"]);
    let mut tied = order[2..4].to_vec();
    tied.sort();
    assert_eq!(tied, ["Dunned", "Monthly"]);
    assert_eq!(&order[4..], ["Yearly", "Prospect"]);

    // Filters: plan, status, dunning, text.
    assert_eq!(names(&list(&app, &["--plan", "pro"])), ["Seats", "Euro"]);
    assert_eq!(names(&list(&app, &["--dunning", "open"])), ["Dunned"], "open includes restricted");
    assert_eq!(names(&list(&app, &["--status", "none"])), ["Prospect"]);
    assert_eq!(names(&list(&app, &["--search", "year"])), ["Yearly"]);
    assert_eq!(names(&list(&app, &["--search", "%"])), Vec::<String>::new(), "a LIKE wildcard is taken literally");
    assert_eq!(names(&list(&app, &["--search", &monthly.to_string()])), ["Monthly"]);

    // Pages of two, each after the last: every tenant once, in order, and how many are left.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = list(&app, &args);
        seen.extend(names(&page));
        assert_eq!(page["more"].as_i64(), Some(6 - seen.len() as i64), "{page}");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, order);
    let out = app.cli(&["tenants", "list", "--sort", "activity", "--cursor", cursor.as_deref().unwrap_or("x")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cursor"), "a cursor of another sort is refused");

    // Last activity: an API call, written by the api role in a batch.
    let (_, key) = app.key(Some(monthly), &[Scope::EntitlementsRead]).await;
    let (status, _) = app.call(reqwest::Method::GET, "/v1/entitlements", &key, None).await;
    assert!(status.is_success());
    assert_eq!(app.state.tenant_activity.write(&app.state.system_pool).await.expect("write"), 1);
    let recent = list(&app, &["--sort", "activity", "--limit", "1"]);
    assert_eq!(names(&recent), ["Monthly"]);
    let at: chrono::DateTime<chrono::Utc> = recent["customers"][0]["last_activity_at"].as_str().expect("time").parse().expect("rfc3339");
    assert!((chrono::Utc::now() - at).num_seconds().abs() < 60);
    let text = String::from_utf8_lossy(&app.cli(&["tenants", "list", "--limit", "1"]).stdout).into_owned();
    assert!(text.contains("usd 65.00") && text.contains("5 more not shown: --cursor"), "{text}");
}

/// A tenant's timeline merges what happened to it, newest first, with who did it, and pages
/// by its cursor.
#[tokio::test]
async fn a_tenants_timeline_merges_events_usage_dunning_and_audited_actions_with_who_did_them() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (tenant, _) = subscribe(&app, &sim, "Timely", STARTER).await;
    let id = tenant.to_string();
    let as_ada = [("BALLAST_ACTOR", "ada")];
    let key = app.cli_with(&["--json", "keys", "create", "--tenant", &id, "--scopes", "usage:write", "--name", "app"], &as_ada);
    assert!(key.status.success(), "{}", String::from_utf8_lossy(&key.stderr));
    let key: Value = serde_json::from_slice(&key.stdout).expect("json");
    let key = key["key"].as_str().expect("key").to_owned();
    let body = serde_json::json!({"items": [{"metric": "api_calls", "quantity": 42, "timestamp": (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339(), "idempotency_key": "t1"}]});
    let (status, _) = app.call(reqwest::Method::POST, "/v1/usage", &key, Some(body)).await;
    assert!(status.is_success());
    // Served beside: the flush reports to the simulator in this process.
    let flushed = app.cli_async(&["usage", "flush", "--all"], &[]).await;
    assert!(flushed.status.success(), "{}", String::from_utf8_lossy(&flushed.stderr));
    let overridden = app.cli_with(&["overrides", "set", "--tenant", &id, "--grant", "sso", "--for", "14d", "--reason", "pilot"], &as_ada);
    assert!(overridden.status.success(), "{}", String::from_utf8_lossy(&overridden.stderr));
    sqlx::query("INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, opened_at) VALUES ($1, 'in_late', 'cus_late', now())")
        .bind(tenant)
        .execute(&app.state.system_pool.0)
        .await
        .expect("case");

    let timeline = |args: &[&str]| -> Value {
        let mut all = vec!["--json", "tenants", "show", id.as_str(), "--timeline"];
        all.extend_from_slice(args);
        let out = app.cli(&all);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let all = timeline(&["--limit", "500"]);
    let entries = all["entries"].as_array().expect("entries").clone();
    let find = |kind: &str, summary: &str| entries.iter().find(|e| e["kind"] == kind && e["summary"].as_str().is_some_and(|s| s.contains(summary))).cloned();
    assert!(find("stripe_event", "customer.subscription.created").is_some(), "{all}");
    let created = find("action", "keys.create").expect("the key's creation");
    assert_eq!(created["actor"], "local:ada");
    let set = find("action", "overrides.set").expect("the override");
    assert_eq!((set["actor"].as_str(), set["detail"]["reason"].as_str()), (Some("local:ada"), Some("pilot")));
    let usage = find("usage", "api_calls").expect("the day's usage");
    assert_eq!(usage["detail"]["quantity"], 42);
    assert!(find("dunning", "dunning case opened for invoice in_late").is_some(), "{all}");
    let times: Vec<&str> = entries.iter().filter_map(|e| e["at"].as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    // Pages of three, each after the last, add up to the whole.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "3"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = timeline(&args);
        paged.extend(page["entries"].as_array().expect("entries").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, entries);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(timeline(&["--since", &later])["entries"], serde_json::json!([]));
}

/// Two writers of the same part of one tenant's row at once (a subscription each): the second
/// waits for the first's list row and then reads what the first committed, so the row holds
/// both. Refreshed from its own statement's earlier snapshot, it would drop the first's MRR.
#[tokio::test]
async fn two_writers_of_one_tenants_subscriptions_at_once_leave_its_list_row_holding_both() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let system = app.state.system_pool.0.clone();
    let tenant = uuid::Uuid::new_v4();
    for sql in [
        "INSERT INTO tenants (id, name) VALUES ($1, 'Both')",
        "INSERT INTO customers (id, tenant_id, stripe_updated_at) VALUES ('cus_both', $1, now())",
    ] {
        sqlx::query(sql).bind(tenant).execute(&system).await.expect("seed");
    }
    let subscribe = "INSERT INTO subscriptions (id, tenant_id, customer_id, status, stripe_updated_at, mrr_minor, mrr_currency) VALUES ($2, $1, 'cus_both', 'active', now(), $3, $4)";
    let mut first = system.begin().await.expect("first");
    sqlx::query(subscribe).bind(tenant).bind("sub_usd").bind(2000i64).bind("usd").execute(&mut *first).await.expect("first subscription");
    // The second writer's backend is read inside its own transaction: behind PgBouncer in
    // transaction pooling, a statement outside one may run on another server connection.
    let mut second = system.begin().await.expect("second");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *second).await.expect("pid");
    let writer = tokio::spawn(async move {
        sqlx::query(subscribe).bind(tenant).bind("sub_eur").bind(500i64).bind("eur").execute(&mut *second).await?;
        second.commit().await
    });
    // The second writer is waiting on the first (a condition, polled: not a timed guess).
    let started = std::time::Instant::now();
    loop {
        let waiting: bool = sqlx::query_scalar("SELECT cardinality(pg_blocking_pids($1)) > 0").bind(pid).fetch_one(&system).await.expect("blocking");
        if waiting {
            break;
        }
        assert!(!writer.is_finished(), "the second writer did not wait for the first: {:?}", writer.await);
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the second writer never waited");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.commit().await.expect("commit");
    writer.await.expect("join").expect("second subscription");
    let row: (serde_json::Value, i64) = sqlx::query_as("SELECT mrr, mrr_top FROM customer_list WHERE tenant_id = $1").bind(tenant).fetch_one(&system).await.expect("row");
    assert_eq!(row, (serde_json::json!({"usd": 2000, "eur": 500}), 2000));
}

/// Tenants from before the list had rows of its own get theirs from the `backfills` service, and
/// those bound before the customer history its binding's row;
/// `more` counts to 1,000 past the page and says when it stopped there; each sort pages
/// through every tenant once, in order, across ties and (by activity) from those that called
/// the API to those that never did.
#[tokio::test]
async fn old_tenants_are_filled_more_stops_counting_at_its_cap_and_every_sort_pages_each_tenant_once() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let system = &app.state.system_pool.0;
    // 1,200 tenants created in threes (ties); a fifth pay (MRR ties too), three in four called
    // the API (ties again).
    sqlx::raw_sql(
        "CREATE TEMP TABLE seed ON COMMIT DROP AS SELECT gen_random_uuid() AS id, g AS n FROM generate_series(1, 1200) g;
         INSERT INTO tenants (id, name, created_at) SELECT id, 'paged-' || n, date_trunc('second', now()) - make_interval(mins => n / 3) FROM seed;
         INSERT INTO customers (id, tenant_id, stripe_updated_at) SELECT 'cus_paged_' || n, id, now() FROM seed WHERE n % 5 = 0;
         INSERT INTO subscriptions (id, tenant_id, customer_id, status, stripe_updated_at, mrr_minor, mrr_currency)
             SELECT 'sub_paged_' || n, id, 'cus_paged_' || n, 'active', now(), (n % 7) * 100, 'usd' FROM seed WHERE n % 5 = 0;
         INSERT INTO tenant_activity (tenant_id, last_seen_at) SELECT id, date_trunc('second', now()) - make_interval(secs => n / 2) FROM seed WHERE n % 4 <> 0;
         -- As if created before migration 0050: half have no row.
         DELETE FROM customer_list WHERE tenant_id IN (SELECT id FROM seed WHERE n <= 600);
         -- As if bound before migration 0024: the paying ones' customers, with no history row.
         UPDATE tenants SET stripe_customer_id = 'cus_paged_' || n FROM seed WHERE seed.id = tenants.id AND n % 5 = 0;",
    )
    .execute(system)
    .await
    .expect("seed");
    let out = app.cli(&["--json", "maintenance", "run", "backfills"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("\"customer_list\":600") && report.contains("\"tenant_customers\":240"), "{report}");
    let bound: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_customers WHERE customer_id LIKE 'cus_paged_%' AND unbound_at IS NULL")
        .fetch_one(system)
        .await
        .expect("bindings");
    assert_eq!(bound, 240, "each bound tenant's current customer is in its history");

    use ballast::tenants::customers::{Filter, Sort, page};
    let pool = &app.state.system_pool;
    let first = page(pool, &Filter::default(), Sort::Mrr, None, 50).await.expect("page");
    assert_eq!((first.more, first.more_counted_to_cap), (1000, true));
    let text = String::from_utf8_lossy(&app.cli(&["tenants", "list", "--limit", "50"]).stdout).into_owned();
    assert!(text.contains("1000+ more not shown: --cursor"), "{text}");

    for sort in [Sort::Mrr, Sort::Activity, Sort::Created] {
        let (mut listed, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let p = page(pool, &Filter::default(), sort, cursor.as_deref(), 100).await.expect("page");
            listed.extend(p.customers);
            pages += 1;
            assert_eq!(p.more_counted_to_cap, p.more == 1000 && 1200 - listed.len() as i64 >= 1000, "{sort:?} page {pages}");
            if !p.more_counted_to_cap {
                assert_eq!(p.more, 1200 - listed.len() as i64, "{sort:?}: an exact count below the cap");
            }
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!((listed.len(), pages), (1200, 12), "{sort:?}");
        let mut ids: Vec<_> = listed.iter().map(|c| c.tenant_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1200, "{sort:?}: each tenant once");
        // Each after the one before in the sort's order, ties by id.
        let key = |c: &ballast::tenants::customers::Customer| match sort {
            Sort::Mrr => c.mrr.values().copied().max().unwrap_or(0),
            Sort::Activity => c.last_activity_at.map_or(-1, |t| t.timestamp_micros()),
            Sort::Created => c.created_at.timestamp_micros(),
        };
        for pair in listed.windows(2) {
            assert!((key(&pair[0]), pair[0].tenant_id) > (key(&pair[1]), pair[1].tenant_id), "{sort:?}: {} before {}", pair[0].name, pair[1].name);
        }
        // The filled rows hold their facts: every paying tenant's MRR.
        for c in &listed {
            let n: i64 = c.name.trim_start_matches("paged-").parse().expect("seeded name");
            let mrr = if n % 5 == 0 { serde_json::json!({"usd": (n % 7) * 100}) } else { serde_json::json!({}) };
            assert_eq!(serde_json::to_value(&c.mrr).expect("json"), mrr, "{}", c.name);
        }
    }
}
