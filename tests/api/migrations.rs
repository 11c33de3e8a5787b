//! Migrations run on a live fleet, where the previous release keeps running beside the new one
//! and a rollback puts it back (migrations/README.md: expand, migrate, contract). A migration
//! that drops or renames a table or column, or adds a NOT NULL column without a default,
//! breaks the release still running: refused unless its first line declares a contract step.

use crate::support::repo_path;

/// What a statement does that only a contract step may.
fn contracts(statement: &str) -> Option<&'static str> {
    let s = statement.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase();
    if s.contains("DROP TABLE") {
        return Some("drops a table");
    }
    if s.contains("DROP COLUMN") {
        return Some("drops a column");
    }
    if s.contains(" RENAME ") {
        return Some("renames a table or column");
    }
    // Each `ADD COLUMN` clause of the statement on its own.
    for clause in s.split("ADD COLUMN").skip(1) {
        let clause = clause.split(", ADD ").next().unwrap_or_default();
        if clause.contains("NOT NULL") && !clause.contains("DEFAULT") {
            return Some("adds a NOT NULL column without a default");
        }
    }
    None
}

/// Why `text` (one migration file) is refused, if it is. A swap step (first line `-- swap step:
/// <why>`) may rename: a table that keeps its name and columns while its storage is swapped (a
/// heap becoming a partitioned table's first partition); it may still drop nothing.
fn refused(text: &str) -> Option<String> {
    let first = text.lines().next().map(str::trim_start).unwrap_or_default();
    if first.starts_with("-- contract step:") {
        return None;
    }
    let swap = first.starts_with("-- swap step:");
    let code: String = text.lines().map(|l| l.split("--").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    without_function_bodies(&code).split(';').find_map(|st| contracts(st).filter(|why| !(swap && why.starts_with("renames"))).map(|why| format!("{why}: {}", st.trim())))
}

/// `code` without the bodies of the functions it creates: what a function does runs when it is
/// called, not when the migration creates it (a DO block's body runs now, and stays).
fn without_function_bodies(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(open) = rest.find("$$") {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let statement = before.rsplit(';').next().unwrap_or_default().to_uppercase();
        let Some(close) = after[2..].find("$$") else { break };
        if !statement.contains("FUNCTION") {
            out.push_str(&after[..close + 4]);
        }
        rest = &after[close + 4..];
    }
    out.push_str(rest);
    out
}

/// The tables that hold tenant data, as the migrations create them: `tenants`, and every table
/// created with a `tenant_id` column. Each forces row-level security.
fn tenant_tables(files: &[String]) -> std::collections::BTreeSet<String> {
    let mut tables = std::collections::BTreeSet::from(["tenants".to_owned()]);
    for text in files {
        for created in text.split("CREATE TABLE ").skip(1) {
            let name = created.trim_start_matches("IF NOT EXISTS ").split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default();
            let columns = created.split("\n)").next().unwrap_or_default();
            if columns.contains("tenant_id") {
                tables.insert(name.to_lowercase());
            }
        }
    }
    tables
}

/// Why `text` is refused for reading or writing tenant rows, if it is: a statement run by the
/// migration (a function's body runs when called, a DO block's now) that inserts, updates or
/// deletes and names a tenant table. The owner role that runs migrations has no BYPASSRLS and
/// every tenant table forces row-level security, so such a statement sees no tenant rows and
/// silently does nothing (0024's backfill copied none); tenant data is backfilled as the system
/// role by the `backfills` maintenance service (migrations/README.md).
fn touches_tenant_rows(text: &str, tenants: &std::collections::BTreeSet<String>) -> Option<String> {
    let code: String = text.lines().map(|l| l.split("--").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    without_function_bodies(&code).split(';').find_map(|statement| {
        let words: Vec<String> = statement.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        let schema_only = words.first().is_none_or(|w| ["create", "alter", "drop", "comment", "grant", "revoke", "set", "select"].contains(&w.as_str()));
        let moves_rows = words.iter().any(|w| ["insert", "update", "delete", "merge", "copy", "truncate"].contains(&w.as_str()));
        let table = words.iter().find(|w| tenants.contains(*w))?;
        (!schema_only && moves_rows).then(|| format!("moves rows of the tenant table {table}, which the owner role cannot see: {}", statement.trim()))
    })
}

/// The one migration that did (0024, applied long ago and never edited): what it meant to copy,
/// the `backfills` maintenance service copies.
const TENANT_ROWS_GRANDFATHERED: &[&str] = &["0024_tenant_customers.sql"];

#[test]
fn no_migration_moves_tenant_rows_the_owner_role_cannot_see() {
    let files: Vec<std::path::PathBuf> = {
        let mut f: Vec<_> = std::fs::read_dir(repo_path("migrations")).expect("migrations").flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "sql")).collect();
        f.sort();
        f
    };
    let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).expect("migration")).collect();
    let tenants = tenant_tables(&texts);
    assert!(tenants.contains("subscriptions") && tenants.contains("usage_ledger"), "{tenants:?}");
    // The checker itself: a backfill and a DO block's update are refused; a trigger's function
    // body and a schema change are not.
    assert!(touches_tenant_rows("INSERT INTO customer_list (tenant_id) SELECT id FROM tenants;", &tenants).is_some());
    assert!(touches_tenant_rows("DO $$ BEGIN UPDATE subscriptions SET mrr_minor = 0; END $$;", &tenants).is_some());
    assert!(touches_tenant_rows("CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO customer_list SELECT * FROM tenants; RETURN NULL; END $$;", &tenants).is_none());
    assert!(touches_tenant_rows("CREATE TRIGGER t AFTER INSERT OR DELETE ON subscriptions FOR EACH ROW EXECUTE FUNCTION f();", &tenants).is_none());
    for (file, text) in files.iter().zip(&texts) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match touches_tenant_rows(text, &tenants) {
            Some(_) if TENANT_ROWS_GRANDFATHERED.contains(&name) => {}
            Some(why) => panic!("{name}: {why}\n(backfill it as the system role: an entry of src/maintenance/backfills.rs; see migrations/README.md)"),
            None => assert!(!TENANT_ROWS_GRANDFATHERED.contains(&name), "{name} is grandfathered but moves no tenant rows"),
        }
    }
}

#[test]
fn the_checker_refuses_what_breaks_the_running_release_and_lets_a_declared_contract_step_through() {
    for bad in [
        "ALTER TABLE invoices DROP COLUMN hosted_invoice_url;",
        "DROP TABLE refunds;",
        "ALTER TABLE refunds RENAME TO give_backs;",
        "ALTER TABLE refunds RENAME COLUMN reason TO why;",
        "ALTER TABLE tenants ADD COLUMN region text NOT NULL;",
        "ALTER TABLE tenants ADD COLUMN a text NULL, ADD COLUMN region text\n    NOT NULL;",
        "-- swap step: renames only\nDROP TABLE refunds;",
        "DO $$ BEGIN EXECUTE 'DROP TABLE refunds'; END $$;",
    ] {
        assert!(refused(bad).is_some(), "not refused: {bad}");
    }
    for fine in [
        "ALTER TABLE tenants ADD COLUMN region text NOT NULL DEFAULT 'eu';",
        "ALTER TABLE tenants ADD COLUMN region text;",
        "CREATE TABLE x (id text PRIMARY KEY, n integer NOT NULL);",
        "ALTER TABLE slo_notifications DROP CONSTRAINT slo_notifications_alert_key_fkey;",
        "-- DROP TABLE in a comment\nCREATE INDEX i ON t (c);",
        "-- contract step: nothing reads hosted_url since 0.9, whose rollback window has passed\nALTER TABLE invoices DROP COLUMN hosted_url;",
        "-- swap step: audit_log keeps its name and columns\nALTER TABLE audit_log RENAME TO audit_log_legacy;",
        "CREATE FUNCTION f(part text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('DROP TABLE %I', part); END $$;",
    ] {
        assert_eq!(refused(fine), None, "refused: {fine}");
    }
}

#[test]
fn no_migration_breaks_the_release_running_beside_it() {
    // Those applied, and the next release's written ahead (migrations/next/, when any).
    let mut files: Vec<_> = ["migrations", "migrations/next"]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(repo_path(dir)).expect("migrations").flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() > 30);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("migration");
        if let Some(why) = refused(&text) {
            panic!("{}: {why}\n(split it: expand now, contract in a later release; see migrations/README.md)", file.display());
        }
    }
}

#[test]
fn every_required_stop_line_reads() {
    let stops: Vec<_> = ballast::db::MIGRATOR.iter().filter_map(|m| ballast::db::required_stop::declared(m).expect("stop line")).collect();
    assert!(stops.iter().any(|s| s.migration.starts_with("0057") && s.release == semver::Version::new(0, 2, 0)), "{stops:?}");
}

/// What a member writes to the fleet's roster (`health::roster`), announcing `release` now.
fn announced(release: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({"roles": ["worker"], "version": release, "started_at": now, "seen": now}).to_string()
}

/// Required stops (0053 and 0057 need every member at 0.2.0 or later: members before it
/// conflict on keys the partitioned ledger and inbox cannot have; 0059 needs 0.4.0, whose
/// deliveries have time-ordered ids; 0063 needs 0.6.0, which keeps an email's dedup key without
/// a unique index; 0068 needs 0.8.0, which writes the time a job's id carries; 0073 needs 0.10.0,
/// which keeps a message's idempotency key without a unique index): `ballast migrate` applies nothing while a live member
/// announces a release older than the pending migrations' highest stop, and names it; once
/// that member runs it, the same command applies them. A database no migration has run on
/// is migrated without the check.
#[tokio::test]
async fn migrate_applies_no_required_stop_while_a_member_of_an_older_release_runs() {
    use redis::AsyncCommands;
    let app = crate::support::TestApp::builder().roles(&[]).spawn().await;
    let db = crate::support::TestDb::create_empty().await;
    let owner = sqlx::PgPool::connect(&db.url("ballast_owner")).await.expect("owner");
    ballast::db::MIGRATOR.run_to(50, &owner).await.expect("the schema of release 0.2.0");
    let env: Vec<(String, String)> = db.env().into_iter().collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let latest = || async { sqlx::query_scalar::<_, i64>("SELECT max(version) FROM _sqlx_migrations").fetch_one(&owner).await.expect("latest") };
    let mut redis = app.state.redis.clone();
    let roster = app.state.keys.fleet_members();

    let () = redis.hset(&roster, "worker-old:41", announced("0.1.0+5d1e2f0")).await.expect("announce");
    // A database no release has run on is migrated whatever the roster says: no member can be
    // running on it (and a first `docker compose up` migrates before Redis is up).
    let fresh = crate::support::TestDb::create_empty().await;
    let fresh_env: Vec<(String, String)> = fresh.env().into_iter().chain([("REDIS_URL".to_owned(), "redis://127.0.0.1:1/0".to_owned())]).collect();
    let fresh_env: Vec<(&str, &str)> = fresh_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let first = app.cli_with(&["migrate"], &fresh_env);
    assert!(first.status.success(), "a fresh database, no Redis: {}", String::from_utf8_lossy(&first.stderr));

    let refused = app.cli_with(&["migrate"], &env);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "applied beside a 0.1.0 member: {said}");
    // The pending migrations' highest stop is named: 0073's, 0.10.0 (0053 and 0057 need 0.2.0,
    // 0059 needs 0.4.0, 0063 needs 0.6.0, 0068 needs 0.8.0).
    assert!(said.contains("worker-old:41 (0.1.0+5d1e2f0)") && said.contains("release 0.10.0 or later"), "{said}");
    assert_eq!(latest().await, 50, "nothing applied");
    // Through the first stop only: still behind the second.
    let () = redis.hset(&roster, "worker-old:41", announced("0.3.0+2c4d6e8")).await.expect("announce");
    let still = app.cli_with(&["migrate"], &env);
    assert!(!still.status.success() && String::from_utf8_lossy(&still.stderr).contains("worker-old:41 (0.3.0+2c4d6e8)"), "{}", String::from_utf8_lossy(&still.stderr));
    assert_eq!(latest().await, 50, "nothing applied");

    let () = redis.hset(&roster, "worker-old:41", announced("0.4.0+9a8b7c6")).await.expect("announce");
    let still = app.cli_with(&["migrate"], &env);
    assert!(!still.status.success() && String::from_utf8_lossy(&still.stderr).contains("release 0.10.0 or later"), "{}", String::from_utf8_lossy(&still.stderr));
    assert_eq!(latest().await, 50, "nothing applied");

    // The member went through the stops.
    let () = redis.hset(&roster, "worker-old:41", announced("0.10.0+9a8b7c6")).await.expect("announce");
    let applied = app.cli_with(&["migrate", "--json"], &env);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    assert!(latest().await >= 57);
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'stripe_events'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p", "the inbox is partitioned");
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'webhook_deliveries'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p", "the deliveries are partitioned");
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'email_outbox'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p", "the email outbox is partitioned");
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'job_status'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p", "job statuses are partitioned");
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'webhook_messages'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p", "outbound messages are partitioned");
}
