//! The optional settings file (`BALLAST_CONFIG`): TOML whose keys are the settings' names.

use std::collections::HashMap;

use super::ConfigError;

/// Reads `KEY = "value"` pairs from a TOML file; keys are the environment variable names.
pub(super) fn read_file(path: &str) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("BALLAST_CONFIG", format!("cannot read {path}: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::new("BALLAST_CONFIG", format!("{path} is not valid TOML: {}", e.message())))?;
    let mut out = HashMap::new();
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(ConfigError::new(&key, format!("in {path}: use a string, number or boolean"))),
        };
        out.insert(key.to_uppercase(), value);
    }
    Ok(out)
}
