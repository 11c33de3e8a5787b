//! The capacity load test against an in-process api member: an open-model run that passes,
//! an abuse level the limiter answers with 429 (never 5xx), stored runs and their history.

use ballast::auth::Scope;
use serde_json::Value;

use crate::support::TestApp;

const LEVELS: &str = r#"
[levels.steady]
rate = 100
duration = "1s"
expect = "no_5xx"
requests = [{ path = "/healthz", weight = 1 }, { path = "/v1/entitlements", auth = "key", weight = 1 }]

[levels.abuse]
rate = 200
duration = "1s"
expect = "limited"
requests = [{ path = "/readyz", weight = 1 }, { path = "/v1/entitlements", auth = "bogus", weight = 1 }]
"#;

// Multi-threaded: the CLI process is waited for on one thread while the api member serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_run_open_model_store_baselines_and_abuse_meets_the_limiter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let levels = dir.path().join("loadtest.toml");
    std::fs::write(&levels, LEVELS).expect("levels");
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).env("BALLAST_LOADTEST_FILE", &levels.display().to_string()).spawn().await;
    let tenant = app.tenant("load").await;
    let (_, key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    let target = app.url("/");
    let out_dir = dir.path().join("reports");
    let out = out_dir.display().to_string();
    let env = [("BALLAST_LOADTEST_KEY", key.as_str())];

    let run = |level: &str| app.cli_with(&["loadtest", "--level", level, "--target", &target, "--out", &out, "--json"], &env);
    let steady = run("steady");
    assert!(steady.status.success(), "{}\n{}", String::from_utf8_lossy(&steady.stdout), String::from_utf8_lossy(&steady.stderr));
    let report: Value = serde_json::from_slice(&steady.stdout).expect("json");
    assert_eq!((report["sent"].as_u64(), report["statuses"]["ok"].as_u64()), (Some(100), Some(100)), "{report}");
    assert!(report["p99_ms"].as_f64().is_some_and(|p| p > 0.0) && report["timeline"].as_array().is_some_and(|t| t.len() == 1));

    let abuse = run("abuse");
    assert!(abuse.status.success(), "{}\n{}", String::from_utf8_lossy(&abuse.stdout), String::from_utf8_lossy(&abuse.stderr));
    let report: Value = serde_json::from_slice(&abuse.stdout).expect("json");
    assert!(report["statuses"]["limited"].as_u64().is_some_and(|n| n > 0), "the limiter answered 429: {report}");
    assert_eq!((report["statuses"]["server_error"].as_u64(), report["statuses"]["failed"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(report["passed"], true);

    let files: Vec<String> = std::fs::read_dir(&out_dir).expect("reports").filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.iter().filter(|f| f.ends_with(".json")).count(), 2, "{files:?}");
    let svg = files.iter().find(|f| f.ends_with("-abuse.svg")).expect("chart");
    let svg = std::fs::read_to_string(out_dir.join(svg)).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("p99") && svg.contains("429"), "a chart of latency and answers");

    let chart = dir.path().join("history.svg").display().to_string();
    let history = app.cli(&["loadtest", "history", "--chart", &chart, "--json"]);
    assert!(history.status.success(), "{}", String::from_utf8_lossy(&history.stderr));
    let runs: Value = serde_json::from_slice(&history.stdout).expect("json");
    let levels: Vec<&str> = runs.as_array().expect("runs").iter().filter_map(|r| r["level"].as_str()).collect();
    assert_eq!(levels, vec!["steady", "abuse"]);
    assert!(std::fs::read_to_string(&chart).expect("history chart").contains("baselines"));

    let missing_key = app.cli(&["loadtest", "--level", "steady", "--target", &target, "--out", &out]);
    assert!(!missing_key.status.success());
    assert!(String::from_utf8_lossy(&missing_key.stderr).contains("BALLAST_LOADTEST_KEY"));
}
