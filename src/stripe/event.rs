//! A Stripe event's envelope as the inbox stores it: id, type, time, API version and its
//! `data.object` (read through [`super::objects`]) — or, for a thin event (an API v2 event
//! notification), the object it is about, which is fetched whole before it is applied.

use super::objects::{expandable_id, with_customer_account};

/// Why a verified body is not a usable event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON without the fields every event has.
    #[error("not a Stripe event: {0}")]
    NotAnEvent(&'static str),
}

/// One Stripe event: its envelope and its `data.object`.
#[derive(Debug, Clone)]
pub struct StripeEvent {
    /// `evt_…`: the inbox's idempotency key.
    pub id: crate::newtypes::EventId,
    /// `invoice.paid`, …
    pub event_type: String,
    /// Stripe's clock when the event happened (unix seconds).
    pub created: i64,
    /// Live or test mode.
    pub livemode: bool,
    /// The API version the payload is rendered in.
    pub api_version: Option<String>,
    /// `data.object` (null for a thin event).
    pub object: serde_json::Value,
    /// A thin event's `related_object`: it carries no object, only this reference.
    pub related: Option<RelatedObject>,
}

/// What a thin event is about (<https://docs.stripe.com/event-destinations#thin-events>).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RelatedObject {
    /// `acct_…`, …
    pub id: String,
    /// `v2.core.account`, …
    #[serde(rename = "type")]
    pub object_type: String,
}

/// The thin event types about an Account v2 (an account used as a customer).
pub const ACCOUNT_OBJECT: &str = "v2.core.account";

impl StripeEvent {
    /// Parses a webhook body. `created` falls back to `fallback_created` when absent.
    pub fn parse(body: &[u8], fallback_created: i64) -> Result<Self, EventError> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
        Self::from_value(&value, fallback_created)
    }

    /// Reads an event as Stripe sent it (a webhook, the events list) and makes `raw` storable:
    /// NUL characters (`\u0000`) are legal JSON but PostgreSQL's jsonb and text refuse them,
    /// so they become U+FFFD. Every way an event enters the inbox goes through here, so one
    /// with a NUL is kept and processed rather than refused on each of Stripe's retries.
    pub fn from_stripe(raw: &mut serde_json::Value, fallback_created: i64) -> Result<Self, EventError> {
        replace_nul(raw);
        Self::from_value(raw, fallback_created)
    }

    /// Reads an event from its JSON.
    pub fn from_value(value: &serde_json::Value, fallback_created: i64) -> Result<Self, EventError> {
        let obj = value.as_object().ok_or(EventError::NotAnEvent("the body is not a JSON object"))?;
        let id = obj.get("id").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).ok_or(EventError::NotAnEvent("no id"))?;
        let event_type =
            obj.get("type").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).ok_or(EventError::NotAnEvent("no type"))?;
        if id.len() > 255 || event_type.len() > 255 {
            return Err(EventError::NotAnEvent("id or type longer than 255 characters"));
        }
        Ok(Self {
            id: crate::newtypes::EventId(id.to_owned()),
            event_type: event_type.to_owned(),
            // A thin event's time is an RFC 3339 string, a snapshot event's unix seconds.
            created: obj
                .get("created")
                .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp())))
                .unwrap_or(fallback_created),
            livemode: obj.get("livemode").and_then(|v| v.as_bool()).unwrap_or(false),
            api_version: obj.get("api_version").and_then(|v| v.as_str()).map(str::to_owned),
            object: value.pointer("/data/object").cloned().map(with_customer_account).unwrap_or(serde_json::Value::Null),
            related: obj.get("related_object").and_then(|v| serde_json::from_value(v.clone()).ok()),
        })
    }

    /// The id of the object the event is about; `invoice.upcoming` has none.
    pub fn object_id(&self) -> Option<&str> {
        self.object.get("id").and_then(|v| v.as_str())
    }

    /// The Stripe customer the event concerns, when the payload names it (a thin event about
    /// an account: the account).
    pub fn customer_id(&self) -> Option<&str> {
        if let Some(related) = self.related.as_ref().filter(|r| r.object_type == ACCOUNT_OBJECT) {
            return Some(&related.id);
        }
        if self.event_type.starts_with("customer.") && !self.event_type.starts_with("customer.subscription.") {
            return self.object_id();
        }
        expandable_id(self.object.get("customer")?)
    }
}

/// Replaces every NUL in the strings and keys of `value` with U+FFFD (allocating only where
/// one is found).
fn replace_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                *map = entries.into_iter().map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v)).collect();
            }
            map.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_become_replacement_characters_in_strings_and_keys() {
        let mut raw: serde_json::Value = serde_json::from_str(
            r#"{"id":"evt_1","type":"customer.updated","data":{"object":{"id":"cus_1","name":"a\u0000b","metadata":{"k\u0000":"v"}}}}"#,
        )
        .expect("json");
        let event = StripeEvent::from_stripe(&mut raw, 1).expect("event");
        assert_eq!(event.id.as_str(), "evt_1");
        assert_eq!(raw.pointer("/data/object/name").and_then(|v| v.as_str()), Some("a\u{FFFD}b"));
        assert!(raw.pointer("/data/object/metadata/k\u{FFFD}").is_some(), "{raw}");
        assert_eq!(event.object.pointer("/name").and_then(|v| v.as_str()), Some("a\u{FFFD}b"));
    }

    #[test]
    fn an_event_needs_id_and_type() {
        assert!(matches!(StripeEvent::parse(b"{\"type\":\"x\"}", 0), Err(EventError::NotAnEvent("no id"))));
        assert!(matches!(StripeEvent::parse(b"nope", 0), Err(EventError::NotJson(_))));
        let e = StripeEvent::parse(br#"{"id":"evt_1","type":"customer.created","created":5,"data":{"object":{"id":"cus_1"}}}"#, 0)
            .expect("event");
        assert_eq!((e.customer_id(), e.created), (Some("cus_1"), 5));
    }

    /// <https://docs.stripe.com/api/v2/core/events/object>: a thin event names its related
    /// object and carries its time as an RFC 3339 string.
    #[test]
    fn a_thin_event_names_its_account_as_the_customer() {
        let e = StripeEvent::parse(
            br#"{"id":"evt_test_1","object":"v2.core.event","type":"v2.core.account.updated","livemode":false,"created":"2026-09-30T12:00:01.123Z","context":null,"related_object":{"id":"acct_1","type":"v2.core.account","url":"/v2/core/accounts/acct_1"}}"#,
            0,
        )
        .expect("event");
        assert_eq!((e.customer_id(), e.created, e.object.is_null()), (Some("acct_1"), 1_790_769_601, true));
    }
}
