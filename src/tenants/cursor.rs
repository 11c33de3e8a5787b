//! The operators' lists page by an opaque cursor: the last row's sort position, as JSON in
//! URL-safe base64. A cursor that does not read back as the list's own position is refused.

use base64::Engine;

/// `position` as a cursor.
pub fn encode<T: serde::Serialize>(position: &T) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// The position `cursor` holds; none when it is not one of this shape.
pub fn decode<T: serde::de::DeserializeOwned>(cursor: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?;
    serde_json::from_slice(&bytes).ok()
}
