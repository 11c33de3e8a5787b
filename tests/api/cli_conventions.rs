//! The command line's conventions, held for every command: `ballast --help` walked to each
//! leaf command, each taking --json and each admin or bulk command --execute; exit statuses;
//! a run queued on the fleet readable afterwards; an event's fate readable without SQL.

use std::collections::BTreeSet;

use ballast::newtypes::JobKind;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::stripe_sim::{STARTER, StripeSim};

/// Commands that run an admin job or act in bulk: a dry run unless --execute.
const BULK: &[&str] = &["runbook run", "dunning run", "emails redrive", "cache reshape", "jobs retry", "jobs discard", "secrets rotate-key"];

/// Every other leaf command: reads, one explicit change, serving, or routine work the scheduler
/// also does (flush, warm). A new command must be added to one of the two lists.
const OTHER: &[&str] = &[
    "serve", "probe", "migrate", "enqueue", "jobs list", "jobs show", "jobs pause", "jobs resume", "jobs dead", "keys create", "keys list", "keys revoke",
    "tenants create", "tenants list", "tenants show", "stripe-events list", "stripe-events show", "limits override", "limits revert",
    "limits blocks", "emails list", "usage flush", "usage ledger", "endpoints list", "endpoints show", "deliveries list", "deliveries show", "deliveries resend", "cache warm", "flags list", "flags set", "loadtest", "loadtest history",
    "runbook list", "runbook show", "runbook runs", "runbook runs show", "slo status", "bench jobs", "bench usage", "bench limiter",
    "bench webhooks", "bench entitlements", "bench customers", "bench console", "bench scale", "bench deliveries", "bench soak", "dev stripe serve", "dev stripe checkout", "dev stripe advance",
    "dev stripe card", "dev stripe meter-events", "dev mail serve", "dev mail list", "jobs",
    // Runs what the scheduler's leader runs every few seconds anyway: nothing to dry-run.
    "maintenance", "maintenance status", "maintenance run",
    // One explicit, audited change each (an operator's name on it), or a read.
    "operators add", "operators list", "operators disable", "operators rotate", "overrides set", "overrides list", "overrides revoke",
    "tenants view-as", "tenants view-as-sessions", "tenants view-as-revoke", "tenants usage",
];

fn help(path: &[String]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ballast")).args(path).arg("--help").env_clear().output().expect("ballast --help");
    assert!(out.status.success(), "ballast {path:?} --help exits 0");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands a help text lists (none for a leaf).
fn subcommands(text: &str) -> Vec<String> {
    let Some(start) = text.find("Commands:") else { return Vec::new() };
    text[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_command_takes_json_and_every_admin_or_bulk_command_is_a_dry_run_unless_execute() {
    let mut seen = BTreeSet::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let text = help(&path);
        let subs = subcommands(&text);
        let name = path.join(" ");
        if !path.is_empty() {
            assert!(text.contains("--json"), "`ballast {name}` has no --json:\n{text}");
            // Lists are bounded (the queue overview has one row per job kind, bounded by the catalogue).
            let last = path.last().map(String::as_str).unwrap_or_default();
            if ["list", "dead", "blocks", "history", "runs"].contains(&last) && name != "jobs list" && subcommands(&text).is_empty() {
                assert!(text.contains("--limit"), "`ballast {name}` lists without --limit:\n{text}");
            }
            if BULK.contains(&name.as_str()) {
                assert!(text.contains("--execute"), "`ballast {name}` acts in bulk but has no --execute:\n{text}");
            }
        }
        // A command with subcommands that also runs alone (jobs, loadtest, runbook runs) is a leaf too.
        let runs_alone = !text.lines().any(|l| l.trim_start().starts_with("Usage:") && l.contains("<COMMAND>") && !l.contains("[COMMAND]"));
        if (subs.is_empty() || runs_alone) && !path.is_empty() {
            assert!(BULK.contains(&name.as_str()) || OTHER.contains(&name.as_str()), "`ballast {name}` is in neither list of this test: is it bulk?");
            seen.insert(name);
        }
        for s in subs {
            let mut next = path.clone();
            next.push(s);
            todo.push(next);
        }
    }
    for listed in BULK.iter().chain(OTHER) {
        assert!(seen.contains(*listed), "`ballast {listed}` is listed here but not in --help");
    }
}

#[tokio::test]
async fn jobs_alone_prints_the_overview_and_probe_says_what_it_got() {
    let app = TestApp::builder().spawn().await;
    let out = app.cli(&["jobs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("KIND") && text.contains("stripe.event"), "{text}");

    let listen = app.addr.expect("api").to_string();
    let ok = app.cli_async(&["probe"], &[("BALLAST_LISTEN", &listen)]).await;
    assert!(ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("200"), "{}", String::from_utf8_lossy(&ok.stdout));
    let missing = app.cli_async(&["probe", "--path", "/no-such-path"], &[("BALLAST_LISTEN", &listen)]).await;
    assert_eq!(missing.status.code(), Some(3), "a failing check exits 3: {}", String::from_utf8_lossy(&missing.stdout));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("404"));
}

#[tokio::test]
async fn a_runbook_run_queued_on_the_fleet_is_kept_and_read_back_after_it_ran() {
    let app = TestApp::builder().spawn().await;
    let out = app.cli(&["runbook", "run", "scheduler-no-leader", "--enqueue", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queued: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = queued["queued"].as_str().expect("job id").to_owned();
    app.drain().await;
    let out = app.cli(&["runbook", "runs", "show", &id, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((run["state"].as_str(), run["kind"].as_str(), run["executed"].as_bool()), (Some("done"), Some("scheduler.inspect"), Some(false)), "{run}");
    assert!(run["report"].is_object(), "the report is kept: {run}");
    let listed = app.cli(&["runbook", "runs", "scheduler-no-leader"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id), "{}", String::from_utf8_lossy(&listed.stdout));
}

#[tokio::test]
async fn an_event_whose_job_died_reads_failed_with_its_error_and_the_effects_of_the_others_show() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).roles(&[ballast::app::Role::Api]).spawn().await;
    let tenant = app.tenant("Acme").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    let events = sim.take_events();
    for e in &events {
        assert_eq!(app.deliver(e).await, 200);
    }
    // The queue gives up on one event's job, as it does after its last attempt.
    let jobs = app.state.queue.envelopes(&JobKind::from("stripe.event")).await.expect("queued");
    let dying = jobs.first().expect("a stripe.event job");
    let event_id = dying.payload["event_id"].as_str().expect("event id").to_owned();
    ballast::queue::dead::record(&app.state.system_pool, &dying.id.0, "stripe.event", None, &serde_json::to_value(dying).expect("envelope"), 8, "missing field `items`")
        .await
        .expect("dead letter");

    let out = app.cli(&["stripe-events", "list", "--status", "failed", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let failed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    assert_eq!((failed[0]["id"].as_str(), failed[0]["last_error"].as_str()), (Some(event_id.as_str()), Some("missing field `items`")));
    let shown = app.cli(&["stripe-events", "show", &event_id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(": failed") && text.contains("missing field `items`") && text.contains("jobs retry"), "{text}");
    let all = app.cli(&["stripe-events", "list", "--json"]);
    let all: Value = serde_json::from_slice(&all.stdout).expect("json");
    assert_eq!(all.as_array().map(Vec::len), Some(events.len()), "{all}");
    let bad = app.cli(&["stripe-events", "list", "--status", "lost"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected one of"));
    // The former name (until 0.5.0) is refused, naming the command to run instead.
    let old = app.cli(&["webhooks", "list", "--status", "failed", "--json"]);
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("run `ballast stripe-events list --status failed --json`"), "{}", String::from_utf8_lossy(&old.stderr));

    // One status model: the backlog runbook counts what the list shows, and its dry run
    // reports the open dead letter whatever its parameters.
    let backlog = app.cli(&["runbook", "run", "stripe-webhook-backlog", "--json"]);
    assert!(backlog.status.success() || backlog.status.code() == Some(3), "{}", String::from_utf8_lossy(&backlog.stderr));
    let report: Value = serde_json::from_slice(&backlog.stdout).expect("json");
    let report = if report["report"].is_object() { report["report"].clone() } else { report };
    let failed_rows = report["inbox"].as_array().expect("inbox").iter().find(|s| s["status"] == "failed").map(|s| s["rows"].clone());
    assert_eq!(failed_rows, Some(json!(1)), "{report}");
    assert_eq!((report["dead_letters_open"].as_u64(), report["dead_letters_matching"].as_u64()), (Some(1), Some(0)), "{report}");
    // Discarded, the event still reads failed, saying so, and never retrying with nothing queued.
    let dead_letter = failed[0]["dead_letter"].as_str().expect("dead letter").to_owned();
    let discarded = app.cli(&["jobs", "discard", &dead_letter]);
    assert!(discarded.status.success(), "{}", String::from_utf8_lossy(&discarded.stderr));
    let after: Value = serde_json::from_slice(&app.cli(&["stripe-events", "list", "--status", "failed", "--json"]).stdout).expect("json");
    assert_eq!(after[0]["id"].as_str(), Some(event_id.as_str()), "{after}");
    assert!(after[0]["last_error"].as_str().is_some_and(|e| e.ends_with("(discarded)")) && after[0]["dead_letter"].is_null(), "{after}");
    let retrying: Value = serde_json::from_slice(&app.cli(&["stripe-events", "list", "--status", "retrying", "--json"]).stdout).expect("json");
    assert_eq!(retrying.as_array().map(Vec::len), Some(0), "{retrying}");

    // Every capped list says how many more there are.
    app.tenant("Globex").await;
    app.tenant("Initech").await;
    assert!(app.cli(&["runbook", "run", "scheduler-no-leader"]).status.code().is_some());
    let more_events = format!("{} more not shown", events.len() - 1);
    for (args, expected) in [
        (vec!["stripe-events", "list", "--limit", "1"], more_events.as_str()),
        (vec!["tenants", "list", "--limit", "1"], "2 more not shown"),
        (vec!["runbook", "runs", "--limit", "1"], "1 more not shown"),
    ] {
        let out = app.cli(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(expected), "`ballast {}` does not say {expected:?}:\n{text}", args.join(" "));
    }
}

#[test]
fn keys_create_help_lists_every_scope() {
    let text = help(&["keys".to_owned(), "create".to_owned()]);
    for scope in ballast::auth::Scope::ALL {
        assert!(text.contains(scope.as_str()), "`ballast keys create --help` does not list {}:\n{text}", scope.as_str());
    }
}

/// What a person reads: no debug formatting of a Rust value, and an error said on one line.
fn readable(what: &str, text: &str) {
    for debug in ["{ ", "None", "Some(", "ApiErrors", "\\n"] {
        assert!(!text.contains(debug), "`ballast {what}` shows {debug:?} to a person:\n{text}");
    }
}

#[tokio::test]
async fn errors_and_reports_read_as_sentences_never_as_debug_dumps() {
    // Stripe down: nothing listens where the fleet calls it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let app = TestApp::builder().roles(&[]).env("STRIPE_API_BASE", &format!("http://127.0.0.1:{closed}/")).env("STRIPE_SECRET_KEY", "sk_test_x").spawn().await;
    let failing: &[&[&str]] = &[
        &["tenants", "create", "--name", "Acme", "--external-id", "acme", "--email", "ap@acme.test"],
        &["jobs", "show", "no-such-job"],
        &["stripe-events", "show", "evt_nope"],
        &["keys", "create", "--scopes", "usage:write,nope"],
        &["limits", "override", "--policy", "nope", "--subject", "tenant:x", "--limit", "5"],
        &["serve", "--roles", "api,nope"],
        &["runbook", "show", "no-such-page"],
    ];
    for args in failing {
        let what = args.join(" ");
        let out = app.cli_async(args, &[]).await;
        assert!(!out.status.success(), "`ballast {what}` should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        readable(&what, &stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "`ballast {what}`: one error line:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "`ballast {what}`: the error alone, not the libraries' retries:\n{stderr}");
        assert!(!stderr.lines().any(|l| l.trim_start().starts_with('{')), "`ballast {what}` logs JSON to a person:\n{stderr}");
        // Each cause said once.
        let line = errors[0];
        for part in line.split(": ").filter(|p| p.len() > 12) {
            assert_eq!(line.matches(part).count(), 1, "`ballast {what}` repeats {part:?}: {line}");
        }
    }
    // A report with an optional part not configured and measured durations.
    let out = app.cli_async(&["runbook", "run", "site-down"], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    readable("runbook run site-down", &stdout);
    assert!(stdout.contains("not configured") && !stdout.contains("error: not configured"), "{stdout}");
    for number in stdout.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|n| n.contains('.')) {
        let decimals = number.rsplit('.').next().map_or(0, str::len);
        assert!(decimals <= 2, "a measurement shown to {decimals} decimals: {number}\n{stdout}");
    }
}
