//! Migrations and schema rules.

use sqlx::postgres::PgPoolOptions;

use crate::support::TestDb;

#[tokio::test]
async fn migrations_apply_from_zero_and_twice_is_a_no_op() {
    let db = TestDb::create_empty().await;
    let applied = ballast::db::migrate(&db.url("ballast_owner")).await.expect("migrate from zero");
    assert_eq!(applied, ballast::db::MIGRATOR.iter().count());
    assert_eq!(ballast::db::migrate(&db.url("ballast_owner")).await.expect("again"), 0);
    let pool = PgPoolOptions::new().max_connections(1).connect(&db.url("ballast_system")).await.expect("connect");
    assert!(ballast::db::migrations_current(&pool).await.expect("check"));
}

#[tokio::test]
async fn app_role_cannot_bypass_rls_and_system_role_can() {
    let db = TestDb::create().await;
    let pool = PgPoolOptions::new().max_connections(1).connect(&db.url("ballast_app")).await.expect("connect");
    let (bypass, superuser): (bool, bool) =
        sqlx::query_as("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user").fetch_one(&pool).await.expect("role");
    assert!(!bypass && !superuser);
    let pool = PgPoolOptions::new().max_connections(1).connect(&db.url("ballast_system")).await.expect("connect");
    let bypass: bool = sqlx::query_scalar("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user").fetch_one(&pool).await.expect("role");
    assert!(bypass);
}

#[tokio::test]
async fn every_foreign_key_is_indexed() {
    let db = TestDb::create().await;
    let pool = PgPoolOptions::new().max_connections(1).connect(&db.url("ballast_system")).await.expect("connect");
    // A foreign key is covered when some index starts with exactly its columns.
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT c.conrelid::regclass::text || '(' || c.conname || ')'
         FROM pg_constraint c
         WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
           AND NOT EXISTS (
             SELECT 1 FROM pg_index i
             WHERE i.indrelid = c.conrelid
               AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] @> c.conkey
               AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] <@ c.conkey)",
    )
    .fetch_all(&pool)
    .await
    .expect("catalogue");
    assert!(missing.is_empty(), "foreign keys without an index: {missing:?}");
}
