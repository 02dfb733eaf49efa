//! The console's PHI access trail (issue 17, IHE ATNA's "who saw what"): one audit event for
//! every view of a message's content and every search that names patient data, with the
//! user, their address, how they came (session or token), the action and the message ids.
//! Never message content, and never the patient, visit or order number searched for (the
//! filter says only that one was given). Actions write theirs through [`crate::ops`].

use super::data::{Page, Search};
use super::{Credential, Principal};
use crate::ops::message_ids;

/// Message `id`'s content was shown (`surface`: `page` or `api`).
pub fn message_viewed(principal: &Principal, id: i64, surface: &'static str) {
    tracing::info!(target: "audit", event = "message_viewed", action = "view", user = %principal.user,
        addr = %principal.addr, via = via(principal), surface, message_ids = id,
        "console: message content viewed");
}

/// A search that names a patient, visit or order listed `page` (written whether or not it
/// found anything).
pub fn messages_searched(principal: &Principal, search: &Search, page: &Page, surface: &'static str) {
    tracing::info!(target: "audit", event = "messages_searched", action = "search", user = %principal.user,
        addr = %principal.addr, via = via(principal), surface, filter = %search.filter.describe(),
        count = page.messages.len() as u64, message_ids = %message_ids(page.messages.iter().map(|m| m.id)),
        "console: search by patient data");
}

fn via(principal: &Principal) -> &'static str {
    match principal.credential {
        Credential::Session => "session",
        Credential::Token { .. } => "token",
    }
}
