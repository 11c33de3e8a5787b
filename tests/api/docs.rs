//! The documentation held against the product: docs/api.md names exactly the routes that
//! `GET /openapi.json` describes; README stays a front door (under 300 lines) with its
//! reference in docs/; every page of docs/ is in the index; every relative link resolves.

use std::collections::BTreeSet;
use std::path::Path;

use ballast::app::Role;

use crate::support::{TestApp, repo_path};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Every "`METHOD /path`" a page names (a query string dropped).
fn routes_named(page: &str) -> BTreeSet<String> {
    page.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            let (method, path) = span.split_once(' ')?;
            (METHODS.contains(&method) && path.starts_with('/')).then(|| format!("{method} {}", path.split('?').next().unwrap_or(path)))
        })
        .collect()
}

#[tokio::test]
async fn the_api_page_names_exactly_the_routes_openapi_json_describes() {
    let app = TestApp::builder().roles(&[Role::Api]).spawn().await;
    let doc: serde_json::Value = app.http.get(app.url("/openapi.json")).send().await.expect("GET /openapi.json").json().await.expect("json");
    let described: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| ops.as_object().into_iter().flat_map(|o| o.keys()).map(move |m| format!("{} {path}", m.to_uppercase())))
        .filter(|r| METHODS.iter().any(|m| r.starts_with(m)))
        .collect();
    assert!(described.len() >= 10, "{described:?}");
    let page = std::fs::read_to_string(repo_path("docs/api.md")).expect("docs/api.md");
    let named = routes_named(&page);
    let missing: Vec<_> = described.difference(&named).collect();
    let unknown: Vec<_> = named.difference(&described).collect();
    assert!(missing.is_empty(), "routes /openapi.json describes that docs/api.md does not name: {missing:?}");
    assert!(unknown.is_empty(), "routes docs/api.md names that /openapi.json does not describe: {unknown:?}");
}

/// The relative links of a Markdown file (`[text](target)`, anchors dropped).
fn relative_links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')')?];
            let target = target.split('#').next().unwrap_or_default();
            (!target.is_empty() && !target.contains("://") && !target.starts_with("mailto:")).then(|| target.to_owned())
        })
        .collect()
}

#[test]
fn readme_is_a_front_door_and_every_docs_page_is_indexed_and_linked_right() {
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("README.md");
    assert!(readme.lines().count() < 300, "README.md has {} lines: move reference into docs/", readme.lines().count());
    let index = std::fs::read_to_string(repo_path("docs/README.md")).expect("docs/README.md");
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(repo_path("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    for page in &pages {
        let name = page.file_name().and_then(|n| n.to_str()).expect("name");
        if name != "README.md" {
            assert!(index.contains(&format!("]({name})")), "docs/{name} is not in docs/README.md's index");
        }
    }
    for file in pages.iter().cloned().chain([repo_path("README.md")]) {
        let text = std::fs::read_to_string(&file).expect("read");
        let dir = file.parent().expect("folder");
        for link in relative_links(&text) {
            assert!(Path::new(dir).join(&link).exists(), "{}: the link {link} leads nowhere", file.display());
        }
    }
}

#[test]
fn the_suites_answers_are_held_to_the_openapi_document() {
    use crate::support::openapi_check::check;
    use reqwest::Method;
    let status = serde_json::json!({"id": "j1", "kind": "noop", "state": "done", "attempts": 1, "created_at": "2026-12-04T10:00:00Z", "next_attempt_at": null});
    assert_eq!(check(&Method::GET, "/v1/jobs/j1", 200, &status), Ok(()), "a real answer, nulls included");
    let drifted = serde_json::json!({"id": "j1", "kind": "noop", "state": "finished", "attempts": "one", "created_at": "2026-12-04T10:00:00Z"});
    assert!(check(&Method::GET, "/v1/jobs/j1", 200, &drifted).is_err(), "an answer its schema refuses");
    assert!(check(&Method::GET, "/v1/jobs/j1", 418, &serde_json::json!({})).is_err(), "a status the document does not declare");
    let error = serde_json::json!({"error": {"code": "not_found", "message": "no job"}});
    assert_eq!(check(&Method::GET, "/v1/jobs/j1?x=1", 404, &error), Ok(()));
    assert!(check(&Method::GET, "/v1/jobs/j1", 404, &serde_json::json!({"message": "no job"})).is_err(), "an error outside the error shape");
    // Query parameters and repeat answers are declared.
    let doc = ballast::api::openapi::document(&ballast::api::routes());
    let params = doc["paths"]["/v1/tenants"]["get"]["parameters"].to_string();
    assert!(params.contains("external_id") && params.contains("starting_after"), "{params}");
    assert!(doc["paths"]["/v1/tenants"]["post"]["responses"]["200"].is_object());
}

#[test]
fn every_json_body_is_described_by_the_handlers_own_type() {
    let doc = ballast::api::openapi::document(&ballast::api::routes());
    let foreign = ["/openapi.json", "/webhooks/stripe"];
    let mut bare = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let bodies = op["responses"].as_object().expect("responses").iter().filter(|(s, _)| s.starts_with('2')).map(|(_, r)| r["content"]["application/json"]["schema"].clone())
                .chain([op["requestBody"]["content"]["application/json"]["schema"].clone()]);
            for schema in bodies.filter(|s| !s.is_null()) {
                let named = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")).is_some_and(|n| doc["components"]["schemas"][n]["description"].is_string());
                if !named && !foreign.contains(&path.as_str()) {
                    bare.push(format!("{method} {path}: {schema}"));
                }
            }
        }
    }
    assert!(bare.is_empty(), "bodies not described by a documented type: {bare:#?}");
    // A type's fields are its schema's properties: what a handler serializes is what the
    // document lists (a field added to the type appears in both).
    let status = ballast::queue::status::JobStatus {
        id: "j1".into(), kind: "noop".into(), state: ballast::queue::status::JobState::Done, attempts: 1, last_error: None, next_attempt_at: None,
        created_at: chrono::Utc::now(), started_at: None, finished_at: None, jobs: vec![],
        history: vec![ballast::queue::attempts::Attempt::new(1, chrono::Utc::now(), std::time::Duration::from_millis(3), None, None)],
    };
    let written: BTreeSet<String> = serde_json::to_value(&status).expect("json").as_object().expect("object").keys().cloned().collect();
    let described: BTreeSet<String> = doc["components"]["schemas"]["JobStatus"]["properties"].as_object().expect("properties").keys().cloned().collect();
    assert!(written.is_subset(&described) && described.len() == written.len() + 1, "written {written:?}, described {described:?} (jobs only for messages)");
    let usage = &doc["components"]["schemas"]["CurrentUsage"]["properties"]["metrics"];
    assert_eq!(usage["additionalProperties"]["$ref"], "#/components/schemas/MetricUsage", "GET /v1/usage names its per-metric shape: {usage}");
}
