//! Per-test databases cloned from a migrated template.

use std::collections::HashMap;

use sqlx::{Connection, Executor, PgConnection};

const TEMPLATE: &str = "ballast_template";
/// Serialises template (re)builds and clones across test processes and threads.
const TEMPLATE_LOCK: i64 = 0x0ba1_1a57;

fn admin_url() -> String {
    std::env::var("BALLAST_TEST_PG_ADMIN_URL").expect("BALLAST_TEST_PG_ADMIN_URL: run tests with deploy/dev.sh test")
}

/// URL of `role` (ballast_app, ballast_system, ballast_owner) on database `db`.
pub fn role_url(role: &str, db: &str) -> String {
    let base = std::env::var("BALLAST_TEST_PG_BASE_URL").expect("BALLAST_TEST_PG_BASE_URL: run tests with deploy/dev.sh test");
    format!("{}/{}", base.replace("%ROLE%", role), db)
}

/// URL of `role` on `db` through the local PgBouncer in transaction pooling that
/// `deploy/dev.sh test` starts (`BALLAST_TEST_PGBOUNCER_URL`, shaped like
/// `BALLAST_TEST_PG_BASE_URL`).
pub fn pgbouncer_url(role: &str, db: &str) -> String {
    let base = std::env::var("BALLAST_TEST_PGBOUNCER_URL").expect("BALLAST_TEST_PGBOUNCER_URL: run tests with deploy/dev.sh test (it starts PgBouncer)");
    format!("{}/{}", base.replace("%ROLE%", role), db)
}

/// Whether this pass of the suite runs its fleets through PgBouncer (`dev.sh test`'s second
/// pass sets `BALLAST_TEST_FLEET_THROUGH_PGBOUNCER=1`).
pub fn fleet_through_pgbouncer() -> bool {
    std::env::var("BALLAST_TEST_FLEET_THROUGH_PGBOUNCER").is_ok_and(|v| v == "1")
}

/// URL of `role` on `db` as the fleet reaches it: through PgBouncer on that pass.
pub fn fleet_url(role: &str, db: &str) -> String {
    if fleet_through_pgbouncer() { pgbouncer_url(role, db) } else { role_url(role, db) }
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn create() -> Self {
        let name = format!("ballast_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect("connect as admin");
        admin.execute(sqlx::AssertSqlSafe(format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})"))).await.expect("lock");
        ensure_template(&mut admin).await;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER ballast_owner")))
            .await
            .expect("clone template");
        admin.execute(sqlx::AssertSqlSafe(format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"))).await.expect("unlock");
        Self { name }
    }

    /// An empty database (no migrations), owned by the owner role.
    pub async fn create_empty() -> Self {
        let name = format!("ballast_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect("connect as admin");
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} OWNER ballast_owner"))).await.expect("create db");
        Self { name }
    }

    /// The environment a Ballast process needs for this database. Under `deploy/dev.sh test`'s
    /// PgBouncer pass the app and system roles connect through the pooler in transaction mode,
    /// as a fleet behind one does; migrations (the owner) always go straight to PostgreSQL.
    pub fn env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("DATABASE_URL".to_owned(), fleet_url("ballast_app", &self.name)),
            ("BALLAST_SYSTEM_DATABASE_URL".to_owned(), fleet_url("ballast_system", &self.name)),
            ("BALLAST_OWNER_DATABASE_URL".to_owned(), role_url("ballast_owner", &self.name)),
        ])
    }

    pub fn url(&self, role: &str) -> String {
        role_url(role, &self.name)
    }
}

async fn ensure_template(admin: &mut PgConnection) {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(TEMPLATE)
        .fetch_optional(&mut *admin)
        .await
        .expect("query template");
    if exists.is_none() {
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE} OWNER ballast_owner"))).await.expect("create template");
    }
    // Forward-only migrations: applying what is pending keeps the template current. A template
    // built from an edited (never released) migration is rebuilt instead of failing every test.
    if let Err(e) = ballast::db::migrate(&role_url("ballast_owner", TEMPLATE)).await {
        eprintln!("test template is stale ({e}); rebuilding it");
        admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))).await.expect("drop template");
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE} OWNER ballast_owner"))).await.expect("create template");
        ballast::db::migrate(&role_url("ballast_owner", TEMPLATE)).await.expect("migrate template");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
                }
            });
        })
        .join();
    }
}
