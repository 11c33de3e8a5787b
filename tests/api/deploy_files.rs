//! deploy/ agrees with the binary: every manifest parses; images, ports, probes, env names and
//! commands are the ones the real CLI, router and settings have. (No Docker or cluster here:
//! the files are checked against the code, not run.)

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml_ng::Value;

use crate::support::repo_path;

/// Images carry the release's version: never `:latest`, so what runs is what was reviewed
/// (the release pipeline also tags `{version}-{commit}`; `ballast --version` says the commit).
const IMAGE: &str = concat!("ballast:", env!("CARGO_PKG_VERSION"));

/// Every environment variable the settings read (string literals in src/config/), plus the
/// standard OpenTelemetry ones the exporter reads itself.
fn known_env() -> BTreeSet<String> {
    let mut text = String::new();
    for file in std::fs::read_dir(repo_path("src/config")).expect("src/config/").flatten() {
        text.push_str(&std::fs::read_to_string(file.path()).expect("a settings file"));
    }
    let mut names = BTreeSet::new();
    for piece in text.split('"').skip(1).step_by(2) {
        if piece.len() > 3 && piece.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') && piece.contains('_') {
            names.insert(piece.to_owned());
        }
    }
    names
}

fn env_ok(name: &str, known: &BTreeSet<String>) -> bool {
    known.contains(name) || name.starts_with("OTEL_EXPORTER_OTLP_") || name.starts_with("OTEL_BSP_") || name == "OTEL_RESOURCE_ATTRIBUTES"
}

/// The CLI accepts `args` (clap checks them before printing --help).
fn cli_accepts(args: &[String]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ballast")).args(args).arg("--help").env_clear().output().expect("ballast");
    assert!(out.status.success(), "`ballast {}` is not a command of the binary: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// GET routes the router serves.
fn get_routes() -> BTreeSet<String> {
    ballast::api::routes().into_iter().filter(|r| r.method == axum::http::Method::GET).map(|r| r.path.to_owned()).collect()
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_the_binary_as_a_non_root_user() {
    let text = std::fs::read_to_string(repo_path("deploy/Dockerfile")).expect("Dockerfile");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    let runtime = &text[text.rfind("\nFROM ").expect("a last stage")..];
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER in the runtime stage");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "non-root: {user}");
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/ballast\"]"));
    assert!(runtime.contains("BALLAST_LISTEN=0.0.0.0:8080") && runtime.contains("EXPOSE 8080"));
    // Everything it copies from the repository exists.
    let mut copied = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo_path(src).exists(), "Dockerfile copies {src}, which the repository lacks");
            copied.push(src.trim_end_matches('/').to_owned());
        }
    }
    // And everything the binary compiles in is copied (a file of deploy/ compiled in and not
    // copied breaks the image's build, which nothing here runs).
    let mut sources = Vec::new();
    collect_rs(&repo_path("src"), &mut sources);
    for file in sources {
        let code = std::fs::read_to_string(&file).expect("source");
        let dir = file.parent().expect("a folder").to_owned();
        let relative = code.split("include_str!(\"").skip(1).map(|p| (dir.clone(), p));
        let from_root = code.split("include_dir!(\"$CARGO_MANIFEST_DIR/").skip(1).map(|p| (repo_path(""), p));
        for (base, piece) in relative.chain(from_root) {
            let named = piece.split('"').next().unwrap_or_default();
            if named.is_empty() || named.contains('{') {
                continue;
            }
            // Resolve `..` by hand: the path is the repository's, whatever the symlinks.
            let mut parts: Vec<String> = Vec::new();
            for part in base.join(named).strip_prefix(repo_path("")).expect("inside the repository").components() {
                match part {
                    std::path::Component::ParentDir => {
                        parts.pop();
                    }
                    other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
                }
            }
            let rel = parts.join("/");
            assert!(copied.iter().any(|c| &rel == c || rel.starts_with(&format!("{c}/"))), "{} compiles in {rel}, which the Dockerfile does not copy", file.display());
        }
    }
    let cmd = runtime.lines().find_map(|l| l.strip_prefix("CMD ")).expect("CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD as a JSON array");
    cli_accepts(&args);
}

#[test]
fn the_compose_file_splits_the_fleet_by_role_with_real_commands_and_settings() {
    let mut doc = yaml_docs(&repo_path("deploy/compose.yaml")).remove(0);
    // Compose's `<<: *anchor` merge keys, as Docker Compose applies them.
    doc.apply_merge().expect("merge keys");
    for (_, svc) in doc["services"].as_mapping_mut().expect("services").iter_mut() {
        svc.apply_merge().expect("merge keys");
        if let Some(env) = svc.get_mut("environment") {
            env.apply_merge().expect("merge keys");
        }
    }
    let services = doc["services"].as_mapping().expect("services");
    for needed in ["postgres", "redis", "otel-collector", "migrate", "api", "worker", "scheduler"] {
        assert!(services.contains_key(needed), "compose lacks {needed}");
    }
    // Jobs the intake acknowledges live only in Redis: it keeps an append-only file on a volume.
    let redis = strs(&services["redis"]["command"]).join(" ");
    assert!(redis.contains("--appendonly yes"), "compose's Redis must persist: {redis}");
    assert!(!strs(&services["redis"]["volumes"]).is_empty(), "compose's Redis keeps its files on a volume");
    let known = known_env();
    let mut roles = BTreeSet::new();
    for (name, svc) in services {
        if svc["image"].as_str() != Some(IMAGE) {
            continue;
        }
        let command = strs(&svc["command"]);
        cli_accepts(&command);
        if command.first().map(String::as_str) == Some("serve") {
            roles.insert(command[2].clone());
        }
        for (k, _) in svc["environment"].as_mapping().expect("environment") {
            let k = k.as_str().unwrap_or_default();
            assert!(env_ok(k, &known), "compose {name:?}: {k} is not a setting of the binary");
        }
        if let Some(test) = svc["healthcheck"]["test"].as_sequence() {
            let args: Vec<String> = test.iter().skip(2).filter_map(|x| x.as_str().map(str::to_owned)).collect();
            cli_accepts(&args);
        }
    }
    assert_eq!(roles, ["api", "scheduler", "worker"].map(String::from).into_iter().collect());
    assert_eq!(services[&Value::from("api")]["ports"][0].as_str(), Some("8080:8080"));
    // The collector listens where the fleet exports.
    let collector = yaml_docs(&repo_path("deploy/otel-collector.yaml")).remove(0);
    assert_eq!(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(), Some("0.0.0.0:4318"));
    assert!(collector["service"]["pipelines"]["traces"]["receivers"].as_sequence().is_some_and(|r| r.iter().any(|x| x.as_str() == Some("otlp"))));
    let env = &doc["x-ballast"]["environment"];
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(), Some("http://otel-collector:4318"));
    // The database and roles it initialises are the ones the URLs name.
    let roles_sql = std::fs::read_to_string(repo_path("deploy/postgres-roles.sql")).expect("roles");
    for role in ["ballast_app", "ballast_system", "ballast_owner"] {
        assert!(roles_sql.contains(&format!("CREATE ROLE {role}")));
    }
}

#[test]
fn the_kubernetes_manifests_match_the_binary() {
    let known = known_env();
    let routes = get_routes();
    let mut deployments = BTreeSet::new();
    let mut scaled = None;
    let mut config_namespace = None;
    let mut pdb_components = BTreeSet::new();
    let mut migrate_args = None;
    let mut pgbouncer = Vec::new();
    for entry in std::fs::read_dir(repo_path("deploy/k8s")).expect("deploy/k8s") {
        let path = entry.expect("entry").path();
        for doc in yaml_docs(&path) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if doc["metadata"]["labels"]["app.kubernetes.io/name"].as_str() == Some("pgbouncer") {
                pgbouncer.push(doc);
                continue;
            }
            match kind.as_str() {
                "ConfigMap" => {
                    for (k, _) in doc["data"].as_mapping().expect("data") {
                        assert!(env_ok(k.as_str().unwrap_or_default(), &known), "ConfigMap: {k:?} is not a setting");
                    }
                    assert_eq!(doc["data"]["BALLAST_LISTEN"].as_str(), Some("0.0.0.0:8080"));
                    config_namespace = doc["data"]["BALLAST_REDIS_NAMESPACE"].as_str().map(str::to_owned);
                }
                "Secret" => {
                    for (k, _) in doc["stringData"].as_mapping().expect("stringData") {
                        assert!(env_ok(k.as_str().unwrap_or_default(), &known), "Secret: {k:?} is not a setting");
                    }
                }
                "Deployment" | "Job" => {
                    let containers = &doc["spec"]["template"]["spec"]["containers"];
                    for c in containers.as_sequence().expect("containers") {
                        assert_eq!(c["image"].as_str(), Some(IMAGE), "{}", path.display());
                        let args = strs(&c["args"]);
                        cli_accepts(&args);
                        assert!(c["resources"]["requests"]["cpu"].as_str().is_some() && c["resources"]["requests"]["memory"].as_str().is_some(), "resource requests");
                        for e in c["env"].as_sequence().into_iter().flatten() {
                            assert!(env_ok(e["name"].as_str().unwrap_or_default(), &known), "{}: env {:?}", path.display(), e["name"]);
                        }
                        if kind == "Job" {
                            migrate_args = Some(args);
                            continue;
                        }
                        assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(8080));
                        assert_eq!(args[..2], ["serve".to_owned(), "--roles".to_owned()]);
                        deployments.insert((doc["metadata"]["name"].as_str().unwrap_or_default().to_owned(), args[2].clone()));
                        for (probe, path_expected) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                            let p = &c[probe]["httpGet"];
                            assert_eq!(p["path"].as_str(), Some(path_expected), "{probe}");
                            assert!(routes.contains(path_expected), "{path_expected} is served");
                            assert_eq!(p["port"].as_str(), c["ports"][0]["name"].as_str(), "{probe} port");
                        }
                        assert_eq!(doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"].as_str(), Some("/metrics"));
                        assert!(routes.contains("/metrics"));
                    }
                }
                "ScaledObject" => scaled = Some(doc.clone()),
                "PodDisruptionBudget" => {
                    pdb_components.insert(doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"].as_str().unwrap_or_default().to_owned());
                }
                "Service" => assert_eq!(doc["spec"]["ports"][0]["targetPort"].as_str(), Some("http")),
                other => panic!("{}: unexpected kind {other}", path.display()),
            }
        }
    }
    let roles: BTreeSet<String> = deployments.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(roles, ["api", "scheduler", "worker"].map(String::from).into_iter().collect(), "a Deployment per role");
    assert!(pdb_components.contains("api"));
    assert_eq!(migrate_args, Some(vec!["migrate".to_owned()]));
    // KEDA scales the worker Deployment on the ready list the binary really uses.
    pgbouncer_in_front_of_the_fleet(&pgbouncer);
    let scaled = scaled.expect("a KEDA ScaledObject");
    assert!(deployments.iter().any(|(name, role)| role == "worker" && scaled["spec"]["scaleTargetRef"]["name"].as_str() == Some(name.as_str())));
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"].as_str(), Some("redis"));
    let keys = ballast::redis_keys::RedisKeys::new(config_namespace.as_deref().expect("namespace in the ConfigMap"), false);
    assert_eq!(trigger["metadata"]["listName"].as_str(), Some(ballast::queue::JobQueue::active_list_name(&keys, "stripe.event").as_str()));
}

/// The PgBouncer of the Kubernetes example pools in transaction mode with prepared statements
/// kept, the fleet's two pools reach PostgreSQL through its Service, and migrations do not.
fn pgbouncer_in_front_of_the_fleet(docs: &[Value]) {
    let of = |kind: &'static str| docs.iter().filter(move |d| d["kind"].as_str() == Some(kind));
    let ini = of("ConfigMap").find_map(|d| d["data"]["pgbouncer.ini"].as_str()).expect("pgbouncer.ini in a ConfigMap");
    let setting = |name: &str| ini.lines().find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_owned()));
    assert_eq!(setting("pool_mode").as_deref(), Some("transaction"));
    assert!(setting("max_prepared_statements").and_then(|v| v.parse::<u32>().ok()).is_some_and(|n| n > 0), "prepared statements kept");
    assert!(setting("ignore_startup_parameters").is_some_and(|v| v.contains("extra_float_digits") && v.contains("options")));
    let deployment = of("Deployment").next().expect("a PgBouncer Deployment");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().expect("image");
    let version = image.strip_prefix("ballast-pgbouncer:").expect("the image deploy/pgbouncer.Dockerfile builds");
    let (major, minor) = version.split_once('.').map(|(a, b)| (a.parse::<u32>().unwrap_or(0), b.split('.').next().and_then(|m| m.parse::<u32>().ok()).unwrap_or(0))).expect("a version tag");
    assert!((major, minor) >= (1, 21), "PgBouncer {version} cannot keep prepared statements in transaction pooling");
    let service = of("Service").next().expect("a PgBouncer Service");
    let host = format!("@{}:{}/", service["metadata"]["name"].as_str().expect("name"), service["spec"]["ports"][0]["port"].as_u64().expect("port"));
    let secrets = std::fs::read_to_string(repo_path("deploy/k8s/secret.example.yaml")).expect("secret.example.yaml");
    let url = |name: &str| secrets.lines().find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(str::to_owned)).expect(name);
    assert!(url("DATABASE_URL").contains(&host) && url("BALLAST_SYSTEM_DATABASE_URL").contains(&host), "the fleet's pools go through {host}");
    assert!(!url("BALLAST_OWNER_DATABASE_URL").contains(&host), "migrations hold a session lock: straight to PostgreSQL");
}

/// Setting-shaped string literals anywhere in src/ (`BALLAST_…`, `STRIPE_…`, `OTEL_…`,
/// `DATABASE_URL`, `REDIS_URL`): the names the binary could read.
fn setting_names_in_src() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).expect("read").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("source"));
            }
        }
    }
    let mut text = String::new();
    walk(&repo_path("src"), &mut text);
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|p| p.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|p| ["BALLAST_", "STRIPE_", "OTEL_"].iter().any(|pre| p.starts_with(pre) && p.len() > pre.len()) || ["DATABASE_URL", "REDIS_URL"].contains(p))
        .map(str::to_owned)
        .collect()
}

/// Names written as settings in a file: `NAME =` or `NAME:` at a line's start, commented out or not.
fn names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter_map(|l| l.split(['=', ':']).next().map(str::trim))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_the_binary_reads_is_in_the_table_the_example_configuration_and_the_kubernetes_files() {
    use ballast::config::names::{Reader, SETTINGS};
    let table: BTreeSet<String> = SETTINGS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let unlisted: Vec<String> = setting_names_in_src().difference(&table).cloned().collect();
    assert!(unlisted.is_empty(), "settings read in src/ but missing from src/config/names.rs: {unlisted:?}");
    let example = names_in(&repo_path("deploy/ballast.example.toml"));
    // A removed name is refused at start, and names its successor there: not offered here.
    let removed: BTreeSet<&str> = SETTINGS.iter().filter(|(_, r)| matches!(r, Reader::Removed)).map(|(n, _)| *n).collect();
    let missing: Vec<&String> = table.iter().filter(|n| !example.contains(*n) && !removed.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "deploy/ballast.example.toml lacks {missing:?}");
    let offered: Vec<&&str> = removed.iter().filter(|n| example.contains(**n)).collect();
    assert!(offered.is_empty(), "deploy/ballast.example.toml offers removed settings {offered:?}");
    let config = names_in(&repo_path("deploy/k8s/config.yaml"));
    let secret = names_in(&repo_path("deploy/k8s/secret.example.yaml"));
    for (name, reader) in SETTINGS {
        match reader {
            Reader::Fleet => assert!(config.contains(*name), "deploy/k8s/config.yaml lacks {name}"),
            Reader::FleetSecret => assert!(secret.contains(*name) && !config.contains(*name), "{name} belongs in deploy/k8s/secret.example.yaml only"),
            Reader::Cli | Reader::Dev | Reader::Removed => assert!(!config.contains(*name) && !secret.contains(*name), "{name} is not a fleet setting"),
        }
    }
    // The examples send billing email from a real domain, and app email from another address.
    let text = std::fs::read_to_string(repo_path("deploy/k8s/config.yaml")).expect("config.yaml");
    for line in text.lines().filter(|l| l.trim_start().starts_with("BALLAST_EMAIL_FROM") || l.trim_start().starts_with("BALLAST_APP_EMAIL_FROM")) {
        assert!(!line.contains("localhost"), "{line}");
    }
}

#[test]
fn no_deploy_file_runs_a_floating_latest_image() {
    let mut files = Vec::new();
    for dir in ["deploy", "deploy/k8s"] {
        for entry in std::fs::read_dir(repo_path(dir)).expect("deploy/").flatten() {
            if entry.path().is_file() {
                files.push(entry.path());
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!text.contains(":latest"), "{} names a :latest image", file.display());
    }
}

/// `ballast --version` names the release: the version and the commit it was built from.
#[test]
fn the_binary_names_its_version_and_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ballast")).arg("--version").env_clear().output().expect("ballast --version");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(text, format!("ballast {}", ballast::RELEASE));
    let commit = ballast::RELEASE.split('+').nth(1).expect("a commit");
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(repo_path("")).output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        // Built from this checkout (a build from a later commit would name that one).
        assert_eq!(commit.len(), 12, "{text}");
        assert!(commit.chars().all(|c| c.is_ascii_hexdigit()), "{text}: {}", String::from_utf8_lossy(&head.stdout));
    }
}
