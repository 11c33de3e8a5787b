//! Where an inbox row is, and what an insert did: the states the inbox's SQL writes and reads.

/// Where an inbox row is. (The table's CHECK also allows `failed`, which nothing writes: a
/// failing event stays `received`/`queued` with its `last_error` and attempts.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Stored; its job is pushed at intake (unless Redis was down), with no second write.
    Received,
    /// Pushed again by the sweep, a release or a re-queue, which mark it.
    Queued,
    /// Applied to the mirror.
    Processed,
    /// A type Ballast does not act on.
    Ignored,
    /// Parked: no tenant for its customer yet; released when the mapping appears.
    Unmatched,
}

impl InboxStatus {
    /// Every status Ballast writes.
    pub const ALL: [InboxStatus; 5] = [InboxStatus::Received, InboxStatus::Queued, InboxStatus::Processed, InboxStatus::Ignored, InboxStatus::Unmatched];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Received => "received",
            InboxStatus::Queued => "queued",
            InboxStatus::Processed => "processed",
            InboxStatus::Ignored => "ignored",
            InboxStatus::Unmatched => "unmatched",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Nothing more will happen to the row.
    pub fn is_done(self) -> bool {
        matches!(self, InboxStatus::Processed | InboxStatus::Ignored)
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new row, to be queued.
    New,
    /// A new row of a type Ballast does not act on: stored as ignored, nothing to queue.
    Ignored,
    /// The event id was already in the inbox.
    Duplicate,
}

#[cfg(test)]
mod tests {
    use super::InboxStatus;

    #[test]
    fn what_a_retirement_keeps_is_every_status_not_done() {
        for status in InboxStatus::ALL {
            let named = crate::stripe::inbox::STILL_TO_HANDLE.contains(&format!("'{}'", status.as_str()));
            assert_eq!(named, !status.is_done(), "{status:?}");
        }
    }
}
