//! Parse-don't-validate newtypes shared across modules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A tenant: the unit of isolation in the database (row-level security keys on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

impl TenantId {
    /// A fresh random tenant id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TenantId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A job's stable identity across its retries (a retry is a new queue entry with the same id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// A fresh, time-ordered job id.
    pub fn new() -> Self {
        Self(Uuid::now_v7().to_string())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Stripe event's id (`evt_…`): the webhook inbox's idempotency key, as it travels from
/// intake through the queue to the handler.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct EventId(pub String);

impl EventId {
    /// The id as Stripe wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a job kind, as written in jobs/ and the registry (`stripe.event`, `noop`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct JobKind(pub String);

impl JobKind {
    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobKind {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// An amount of money as Stripe states it: an integer in the currency's smallest unit
/// (cents; yen; fils), and the ISO currency code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's smallest unit.
    pub minor: i64,
    /// ISO 4217 code, as Stripe writes it (lowercase).
    pub currency: String,
}

/// Currencies Stripe states in whole units (no minor unit): an amount of 500 is ¥500.
const ZERO_DECIMAL: [&str; 16] = ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
/// Currencies Stripe states in thousandths.
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

impl Money {
    /// `minor` units of `currency`.
    pub fn new(minor: i64, currency: &str) -> Self {
        Self { minor, currency: currency.to_lowercase() }
    }

    /// Digits after the decimal point for this currency.
    pub fn decimals(&self) -> u32 {
        let c = self.currency.as_str();
        if ZERO_DECIMAL.contains(&c) {
            0
        } else if THREE_DECIMAL.contains(&c) {
            3
        } else {
            2
        }
    }
}

impl fmt::Display for Money {
    /// `USD 20.05`, `JPY 500`, `USD -0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.currency.to_uppercase();
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        match self.decimals() {
            0 => write!(f, "{code} {sign}{abs}"),
            d => {
                let unit = 10u64.pow(d);
                write!(f, "{code} {sign}{}.{:0width$}", abs / unit, abs % unit, width = d as usize)
            }
        }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), with a note of how long it
/// was: for client input echoed in an error, and error text stored or logged, so a hostile
/// input costs a bounded line, not its own size again.
pub fn truncated(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..end], text.len()))
}

#[cfg(test)]
mod truncated_tests {
    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_says_so() {
        assert_eq!(super::truncated("short", 10), "short");
        let cut = super::truncated("ééééé", 3);
        assert_eq!(cut, "é… (10 bytes in all)");
    }
}

#[cfg(test)]
mod money_tests {
    use super::Money;

    #[test]
    fn amounts_are_shown_in_each_currencys_own_units() {
        assert_eq!(Money::new(2005, "usd").to_string(), "USD 20.05");
        // Zero-decimal: Stripe's 500 JPY is ¥500, not ¥5.00.
        assert_eq!(Money::new(500, "jpy").to_string(), "JPY 500");
        assert_eq!(Money::new(1234, "bhd").to_string(), "BHD 1.234");
        // A credit keeps its sign, also under one unit.
        assert_eq!(Money::new(-5, "eur").to_string(), "EUR -0.05");
    }
}
