//! Durations written as text in config files ("7d", "30s", "90m"), read with humantime.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Reads "7d".
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(d)?;
    humantime::parse_duration(&raw).map_err(|e| serde::de::Error::custom(format!("{raw:?}: {e} (e.g. \"30s\", \"7d\")")))
}

/// Writes "7days".
pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*v).to_string())
}
