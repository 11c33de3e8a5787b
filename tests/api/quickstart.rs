//! README's quickstart, run verbatim: every `sh` block between `<!-- quickstart -->` and
//! `<!-- /quickstart -->`, in one bash with `set -euo pipefail`, from the repository root,
//! beside a fleet, `ballast dev stripe serve` and `ballast dev mail serve` as `up` starts them.
//! `./deploy/dev.sh env` is told where this test's fleet and database are through the same
//! variables a user would set (BALLAST_LISTEN, BALLAST_DB, ports, BALLAST_BIN_DIR).

use serde_json::Value;

use crate::support::local_dev::LocalDev;

/// The quickstart's shell blocks, in order.
fn quickstart_blocks(readme: &str) -> Vec<String> {
    let start = readme.find("<!-- quickstart -->").expect("README marks its quickstart");
    let end = readme.find("<!-- /quickstart -->").expect("README closes its quickstart");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme[start..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), l) => lines.push(l),
            (None, _) => {}
        }
    }
    blocks
}

#[tokio::test]
async fn readmes_quickstart_runs_verbatim_from_an_empty_database_to_a_paying_tenant() {
    let _machine = crate::support::MACHINE.read().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let blocks = quickstart_blocks(&readme);
    assert!(blocks.len() >= 6 && blocks[0].contains("dev.sh env"), "{blocks:?}");

    let dev = LocalDev::start().await;
    let (app, mail) = (&dev.app, &dev.mail);
    let path = std::env::var("PATH").unwrap_or_default();

    // What `dev.sh env` must print for this test's services instead of its defaults.
    let db = reqwest::Url::parse(&app.env["DATABASE_URL"]).expect("DATABASE_URL");
    let redis = reqwest::Url::parse(app.env["REDIS_URL"].split(',').next().unwrap_or_default()).expect("REDIS_URL");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_ballast")).parent().expect("bin dir").display().to_string();
    let script = format!("set -euo pipefail\n{}\n", blocks.join("\n"));
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env_clear()
        .envs(&app.env)
        .env("PATH", &path)
        .env("BALLAST_LISTEN", app.addr.expect("api").to_string())
        .env("BALLAST_DB", db.path().trim_start_matches('/'))
        .env("BALLAST_PG_PORT", db.port().unwrap_or(5432).to_string())
        .env("BALLAST_REDIS_PORT", redis.port().unwrap_or(6379).to_string())
        .env("BALLAST_BIN_DIR", &bin_dir)
        .env("BALLAST_DEV_MAIL_DIR", mail.path())
        // Where dev.sh keeps the PostgreSQL socket `env` names (the run's, when not .ballast/).
        .envs(std::env::var("BALLAST_DATA").ok().map(|d| ("BALLAST_DATA", d)))
        .output()
        .await
        .expect("bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the quickstart failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}");

    // What the page promises, checked against the system itself.
    let tenant: (uuid::Uuid, Option<String>) = sqlx::query_as("SELECT id, stripe_customer_id FROM tenants WHERE external_id = 'acme-1'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("the tenant exists");
    assert!(tenant.1.as_deref().is_some_and(|c| c.starts_with("cus_")), "bound to a customer at the local Stripe");
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM subscriptions WHERE tenant_id = $1").bind(tenant.0).fetch_optional(&app.state.system_pool.0).await.expect("subscription");
    assert_eq!(status.as_deref(), Some("active"), "the trial converted");
    let ledger: i64 = sqlx::query_scalar("SELECT COALESCE(sum(quantity), 0)::bigint FROM usage_ledger WHERE tenant_id = $1").bind(tenant.0).fetch_one(&app.state.system_pool.0).await.expect("ledger");
    assert_eq!(ledger, 120, "the usage was flushed into the ledger");
    let entitlements: Value = serde_json::from_str(stdout.lines().find(|l| l.contains("\"api_access\"")).unwrap_or("{}")).unwrap_or_default();
    assert!(entitlements.to_string().contains("api_access"), "the entitlements were printed:\n{stdout}");
    assert!(stdout.contains("billing@acme.test") && stdout.contains("Welcome"), "the welcome email was listed:\n{stdout}");
    assert!(stdout.contains("dry run; --execute to act"), "the runbook ran as a dry run:\n{stdout}");
    assert!(stdout.lines().count() < 200, "the walk's output stays readable: {} lines", stdout.lines().count());
}
