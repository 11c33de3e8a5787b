//! Settings parsing: defaults, and errors that name the setting.

use super::*;

fn base() -> HashMap<String, String> {
    [
        ("DATABASE_URL", "postgres://app:pw@127.0.0.1/db"),
        ("BALLAST_SYSTEM_DATABASE_URL", "postgres://sys:pw@127.0.0.1/db"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn defaults_apply() {
    let s = Settings::from_map(base()).expect("valid");
    assert_eq!(s.redis_namespace, "ballast");
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
}

#[test]
fn missing_setting_is_named() {
    let mut env = base();
    env.remove("REDIS_URL");
    let err = Settings::from_map(env).unwrap_err().to_string();
    assert!(err.starts_with("configuration error: REDIS_URL: missing"), "{err}");
}

#[test]
fn malformed_setting_is_named_without_its_value() {
    let mut env = base();
    env.insert("DATABASE_URL".into(), "mysql://secretpw@x".into());
    let err = Settings::from_map(env).unwrap_err().to_string();
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("secretpw"), "{err}");
    let mut env = base();
    env.insert("BALLAST_SHUTDOWN_GRACE_SECS".into(), "soon".into());
    let err = Settings::from_map(env).unwrap_err().to_string();
    assert!(err.contains("BALLAST_SHUTDOWN_GRACE_SECS") && err.contains("soon"), "{err}");
}

#[test]
fn trusted_proxies_take_ranges_and_addresses_and_name_a_bad_one() {
    let mut env = base();
    env.insert("BALLAST_TRUSTED_PROXIES".into(), "10.0.0.0/8, 192.168.1.7,::1".into());
    let s = Settings::from_map(env.clone()).expect("valid");
    assert_eq!(s.http.trusted_proxies.len(), 3);
    assert!(s.http.trusted_proxies[1].contains(&"192.168.1.7".parse::<std::net::IpAddr>().expect("ip")));
    env.insert("BALLAST_TRUSTED_PROXIES".into(), "10.0.0.0/33".into());
    let err = Settings::from_map(env).unwrap_err().to_string();
    assert!(err.contains("BALLAST_TRUSTED_PROXIES") && err.contains("10.0.0.0/33"), "{err}");
    let s = Settings::from_map(base()).expect("valid");
    assert_eq!((s.http.header_timeout, s.http.max_connections), (Duration::from_secs(10), 1024));
}

#[test]
fn debug_output_hides_secrets() {
    let s = Settings::from_map(base()).expect("valid");
    let shown = format!("{s:?}");
    assert!(!shown.contains("pw@"), "{shown}");
}
