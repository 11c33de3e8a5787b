//! A missing or malformed setting stops the binary with one line naming it.

use std::process::Command;

fn ballast(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run ballast")
}

const GOOD: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres://ballast_app:pw@127.0.0.1:1/x"),
    ("BALLAST_SYSTEM_DATABASE_URL", "postgres://ballast_system:pw@127.0.0.1:1/x"),
    ("REDIS_URL", "redis://127.0.0.1:1/0"),
];

#[test]
fn missing_setting_is_named_in_one_line() {
    let env: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != "REDIS_URL").collect();
    let out = ballast(&env, &["jobs", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("REDIS_URL: missing"), "{stderr}");
}

#[test]
fn malformed_setting_is_named_and_secret_not_echoed() {
    let mut env = GOOD.to_vec();
    env.push(("BALLAST_LISTEN", "everywhere"));
    let out = ballast(&env, &["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("BALLAST_LISTEN") && stderr.contains("everywhere"), "{stderr}");

    let mut env: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != "DATABASE_URL").collect();
    env.push(("DATABASE_URL", "mysql://root:hunter2@db/x"));
    let out = ballast(&env, &["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL") && !stderr.contains("hunter2"), "{stderr}");
}

/// A setting renamed and no longer read is refused, naming the new name (read until 0.5.0,
/// with a warning), not silently ignored.
#[test]
fn a_removed_setting_is_refused_naming_its_new_name() {
    let mut env = GOOD.to_vec();
    env.push(("BALLAST_EMAIL_TEMPLATES_DIR", "templates/app_email"));
    let out = ballast(&env, &["jobs", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BALLAST_EMAIL_TEMPLATES_DIR") && stderr.contains("BALLAST_APP_EMAIL_TEMPLATES_DIR"), "{stderr}");
}

#[test]
fn bad_catalogue_names_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("noop.toml"),
        "kind = \"noop\"\ndescription = \"x\"\nconcurrency = 1\ntimeout_secs = 1\nmax_attempts = 1\nbackoff = { base_secs = 1, max_secs = 1 }\nschedule = \"whenever\"\n",
    )
    .expect("write");
    let mut env = GOOD.to_vec();
    let jobs = dir.path().display().to_string();
    env.push(("BALLAST_JOBS_DIR", &jobs));
    let out = ballast(&env, &["jobs", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("noop.toml") && stderr.contains("bad cron expression"), "{stderr}");
}

#[test]
fn help_explains_every_command() {
    let out = ballast(&[], &["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "enqueue", "jobs", "bench"] {
        assert!(stdout.contains(cmd), "{stdout}");
    }
}
