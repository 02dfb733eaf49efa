//! Leases: how several hl7d nodes on one shared store deliver each lane from one node at a
//! time, and take over a dead node's lanes with no operator action. This file is the
//! model (written down here and in docs/scale-out.md, "Delivery across nodes") and its
//! pure part: when an owner renews, and until when it may start an attempt ([`Lease`]).
//! The store's side (the lease rows, the claims) is the queue's (`queue/`).
//!
//! **Node.** Every `hl7d serve` has a name ([`crate::config::NodeConfig`]: `[node] name`,
//! by default the host name and the process id), shown by `hl7d routes status` beside the
//! lanes it holds.
//!
//! **Lease.** On a shared store a lane is delivered only under a lease: one row per lane
//! being worked (`route`, `lane`, the holder's node name, a token, `expires_at` in the
//! database's clock). A node takes a lane when no row exists (an insert that only one node
//! can win) or when the row's lease has expired (an update under `FOR UPDATE SKIP LOCKED`,
//! so two nodes never wait on nor take the same lane); each take draws a new token. The
//! holder renews it every `lease / 3` while it works the lane and deletes the row when its
//! lane task ends (lane empty, not due, parked, or its fair share done), so another node
//! may go on at once. The lease is `[delivery] lease` (default 30 s).
//!
//! **Order.** A lane's next message goes out only after the previous one's outcome is
//! recorded. Each attempt's claim (the row goes in flight) and each outcome is written only
//! while the writer's token still holds the unexpired lease (checked in the same
//! statement), so a node that lost its lease can record nothing.
//!
//! **Losing a lease.** The holder measures its lease on its own monotonic clock from the
//! moment it *sent* the take or renewal, which is no later than the database's `now()`
//! that set `expires_at`; it starts an attempt only before `2/3` of the lease has passed
//! since then ([`Lease::may_attempt`]) and abandons an attempt under way at that moment
//! (the connection closed, nothing recorded) unless a renewal succeeded meanwhile. So a
//! node that is paused or cut off from the database stops working the lane at least
//! `lease / 3` before any other node may take it (the *expiry margin*): with a 30 s lease,
//! 10 s for bytes already written to reach the downstream.
//!
//! **At least once, never out of order.** After a takeover the new holder sends the lane's
//! head again: if the dead node had sent it and the downstream took it but the outcome was
//! never recorded, the downstream sees that message twice (with its own MSH-10, so it can
//! dedupe). It never sees a lane's later message before an earlier one: the new holder
//! starts from the oldest message not recorded as done, and the old holder stopped before
//! the lease expired. The one assumption: a node's clock does not run slower than the
//! database's by a third over one lease, and bytes reach the downstream within the margin.
//! On the embedded SQLite store there is one node and no lease: it owns every lane.

use std::time::Duration;

use tokio::time::Instant;

/// One node's hold on one lane, as that node sees it (pure: the times come in as
/// arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease's length (`[delivery] lease`).
    term: Duration,
    /// When the last successful take or renewal was sent.
    since: Instant,
}

impl Lease {
    /// A lease of `term` whose take (or renewal) was sent at `sent_at` and succeeded.
    pub fn taken(term: Duration, sent_at: Instant) -> Lease {
        Lease { term, since: sent_at }
    }

    /// A renewal sent at `sent_at` succeeded.
    pub fn renewed(&mut self, sent_at: Instant) {
        self.since = self.since.max(sent_at);
    }

    /// When to renew next: a third of the lease after the last renewal.
    pub fn renew_at(&self) -> Instant {
        self.since + self.term / 3
    }

    /// Until when this node may work the lane: two thirds of the lease after the last
    /// renewal was sent, a third before anyone else may take it.
    pub fn good_until(&self) -> Instant {
        self.since + self.term - self.margin()
    }

    /// The expiry margin: how long before the database would let another node take the
    /// lane this node stops working it.
    pub fn margin(&self) -> Duration {
        self.term / 3
    }

    /// Whether an attempt may start (or one under way go on) at `now`.
    pub fn may_attempt(&self, now: Instant) -> bool {
        now < self.good_until()
    }

    /// What to do at `now` about the lease.
    pub fn next_step(&self, now: Instant) -> LeaseStep {
        if !self.may_attempt(now) {
            LeaseStep::Lost
        } else if now >= self.renew_at() {
            LeaseStep::Renew
        } else {
            LeaseStep::Hold { until: self.renew_at() }
        }
    }
}

/// What a lane task does about its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// Nothing until `until`, then look again.
    Hold {
        /// The next renewal.
        until: Instant,
    },
    /// Renew now.
    Renew,
    /// Stop working the lane: no renewal succeeded in time (the attempt under way is
    /// abandoned; nothing more is recorded).
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: Duration = Duration::from_secs(30);

    #[test]
    fn renews_every_third_and_stops_a_third_before_expiry() {
        let t0 = Instant::now();
        let lease = Lease::taken(TERM, t0);
        assert_eq!(lease.next_step(t0), LeaseStep::Hold { until: t0 + Duration::from_secs(10) });
        assert_eq!(lease.next_step(t0 + Duration::from_secs(10)), LeaseStep::Renew);
        assert_eq!(lease.next_step(t0 + Duration::from_millis(19_999)), LeaseStep::Renew);
        assert_eq!(lease.next_step(t0 + Duration::from_secs(20)), LeaseStep::Lost);
        assert!(lease.may_attempt(t0 + Duration::from_millis(19_999)));
        assert!(!lease.may_attempt(t0 + Duration::from_secs(20)));
        assert_eq!(lease.margin(), Duration::from_secs(10));
    }

    #[test]
    fn a_renewal_counts_from_when_it_was_sent() {
        let t0 = Instant::now();
        let mut lease = Lease::taken(TERM, t0);
        // Sent at 10 s, answered at 18 s (a slow database): good until 10 + 20 s.
        lease.renewed(t0 + Duration::from_secs(10));
        assert!(lease.may_attempt(t0 + Duration::from_millis(29_999)));
        assert_eq!(lease.next_step(t0 + Duration::from_secs(30)), LeaseStep::Lost);
        // An answer to an older renewal that arrives late does not move it back.
        lease.renewed(t0 + Duration::from_secs(5));
        assert_eq!(lease.good_until(), t0 + Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn without_renewal_a_paused_holder_finds_its_lease_lost_before_it_expires() {
        let lease = Lease::taken(TERM, Instant::now());
        tokio::time::sleep(Duration::from_secs(25)).await;
        // The database would let another node take it at 30 s at the earliest.
        assert_eq!(lease.next_step(Instant::now()), LeaseStep::Lost);
    }
}
