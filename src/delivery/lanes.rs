//! The scheduler's decisions, without I/O: which lanes to start ([`pick`]) and when a lane
//! becomes held or released ([`HeldLanes`]), so that each is a plain unit test.

use std::collections::{BTreeMap, HashSet};

use crate::store::queue::{DeliveryState, LaneHead};

/// What one walk over a route's lane heads found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pick {
    /// Lanes to start now, in the order found (at most the free slots).
    pub start: Vec<String>,
    /// The earliest `next_attempt_at` (micros) of a lane that is waiting for its backoff,
    /// among the heads walked: when to look again.
    pub next_due: Option<i64>,
    /// Heads looked at.
    pub walked: usize,
}

/// Walks `heads` (each lane's head, in the order the caller wants lanes served) and picks
/// up to `free` lanes that are ready at `now`: head pending (or left in flight) and due,
/// lane not `busy`. A lane whose head is parked is held and never picked. Stops as soon as
/// `free` lanes are found, so a walk costs only the lanes it needs while slots are scarce.
pub fn pick<E>(
    heads: impl Iterator<Item = Result<LaneHead, E>>,
    busy: &HashSet<String>,
    free: usize,
    now: i64,
) -> Result<Pick, E> {
    let mut pick = Pick::default();
    if free == 0 {
        return Ok(pick);
    }
    for head in heads {
        let head = head?;
        pick.walked += 1;
        if busy.contains(&head.lane) {
            continue;
        }
        match head.state {
            DeliveryState::Parked => {}
            // Delivered and skipped rows are not heads; an in-flight head of a lane not busy
            // is an attempt whose outcome could not be written: it goes out again.
            DeliveryState::Pending
            | DeliveryState::InFlight
            | DeliveryState::Delivered
            | DeliveryState::Skipped => {
                if head.next_attempt_at <= now {
                    pick.start.push(head.lane);
                    if pick.start.len() == free {
                        break;
                    }
                } else {
                    pick.next_due =
                        Some(pick.next_due.map_or(head.next_attempt_at, |due| due.min(head.next_attempt_at)));
                }
            }
        }
    }
    Ok(pick)
}

/// A parked head that holds its lane: what the held and released lines name (never the
/// lane key, which holds a patient identifier under `per_patient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkedHead {
    /// The delivery row.
    pub delivery_id: i64,
    /// Its message.
    pub message_id: i64,
}

/// A lane became held or was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneEvent {
    /// Its head was parked: later messages of the lane wait.
    Held {
        /// The lane.
        lane: String,
        /// The parked head.
        head: ParkedHead,
    },
    /// Its head is no longer parked (delivered after an operator's retry, or skipped).
    Released {
        /// The lane.
        lane: String,
        /// The head that was parked.
        head: ParkedHead,
    },
}

/// Which lanes of one route are held, as last seen, so that each change is reported
/// exactly once however often the lanes are looked at and whoever changed them (the engine
/// parking a head, an operator's `routes retry`/`skip` in another process).
#[derive(Debug, Default)]
pub struct HeldLanes {
    held: BTreeMap<String, ParkedHead>,
}

impl HeldLanes {
    /// How many lanes are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no lane is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The engine parked `lane`'s head.
    pub fn parked(&mut self, lane: &str, head: ParkedHead) -> Option<LaneEvent> {
        if self.held.contains_key(lane) {
            return None;
        }
        self.held.insert(lane.to_owned(), head);
        Some(LaneEvent::Held { lane: lane.to_owned(), head })
    }

    /// The engine starts delivering `lane`: its head is pending, so if it was held an
    /// operator released it (and it may be parked again, which is a new hold).
    pub fn starting(&mut self, lane: &str) -> Option<LaneEvent> {
        self.held.remove(lane).map(|head| LaneEvent::Released { lane: lane.to_owned(), head })
    }

    /// The held lanes as read from the store now (each with its parked head): lanes held
    /// since are reported held, lanes no longer held released, in lane order.
    pub fn observe(&mut self, now_held: impl IntoIterator<Item = (String, ParkedHead)>) -> Vec<LaneEvent> {
        let now_held: BTreeMap<String, ParkedHead> = now_held.into_iter().collect();
        let mut events = Vec::new();
        for (lane, head) in &self.held {
            if !now_held.contains_key(lane) {
                events.push(LaneEvent::Released { lane: lane.clone(), head: *head });
            }
        }
        for (lane, head) in &now_held {
            if !self.held.contains_key(lane) {
                events.push(LaneEvent::Held { lane: lane.clone(), head: *head });
            }
        }
        self.held = now_held;
        events
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn head(lane: &str, state: DeliveryState, next_attempt_at: i64) -> Result<LaneHead, Infallible> {
        Ok(LaneHead {
            id: 1,
            lane: lane.to_owned(),
            message_id: 1,
            state,
            attempts: 0,
            queued_at: 0,
            next_attempt_at,
            first_attempt_at: None,
        })
    }

    #[test]
    fn picks_due_lanes_not_busy_not_held_up_to_the_free_slots() {
        use DeliveryState::{InFlight, Parked, Pending};
        let heads = || {
            vec![
                head("a", Pending, 10),
                head("b", Parked, 0),
                head("c", Pending, 50),
                head("d", Pending, 0),
                head("e", InFlight, 0),
                head("f", Pending, 30),
                head("g", Pending, 0),
            ]
            .into_iter()
        };
        let busy: HashSet<String> = ["d".to_owned()].into();
        let pick = pick(heads(), &busy, 2, 20).unwrap();
        assert_eq!(pick.start, ["a", "e"]);
        assert_eq!(pick.walked, 5, "stops once the slots are filled");
        assert_eq!(pick.next_due, Some(50));

        let all = super::pick(heads(), &busy, 10, 20).unwrap();
        assert_eq!(all.start, ["a", "e", "g"]);
        assert_eq!(all.next_due, Some(30));
        assert_eq!(all.walked, 7);
        assert_eq!(super::pick(heads(), &busy, 0, 20).unwrap(), Pick::default());
    }

    #[test]
    fn each_hold_and_release_is_reported_once() {
        let head = |id| ParkedHead { delivery_id: id, message_id: id * 10 };
        let mut held = HeldLanes::default();
        // The engine parks lane a; the store then shows it held, again and again.
        assert_eq!(held.parked("a", head(1)), Some(LaneEvent::Held { lane: "a".into(), head: head(1) }));
        assert_eq!(held.parked("a", head(1)), None);
        assert_eq!(held.observe([("a".to_owned(), head(1))]), []);
        assert_eq!(held.observe([("a".to_owned(), head(1))]), []);
        // Seen in the store first (another engine run parked it), then reported by the lane.
        assert_eq!(
            held.observe([("a".to_owned(), head(1)), ("b".to_owned(), head(2))]),
            [LaneEvent::Held { lane: "b".into(), head: head(2) }]
        );
        assert_eq!(held.parked("b", head(2)), None);
        assert_eq!(held.len(), 2);
        // An operator skips a's head: released once.
        assert_eq!(
            held.observe([("b".to_owned(), head(2))]),
            [LaneEvent::Released { lane: "a".into(), head: head(1) }]
        );
        assert_eq!(held.observe([("b".to_owned(), head(2))]), []);
        // An operator retries b, and the engine starts it before the next look: released
        // then; parked again, held again: one pair per park.
        assert_eq!(held.starting("b"), Some(LaneEvent::Released { lane: "b".into(), head: head(2) }));
        assert_eq!(held.starting("b"), None);
        assert_eq!(held.parked("b", head(2)), Some(LaneEvent::Held { lane: "b".into(), head: head(2) }));
        assert_eq!(held.observe([("b".to_owned(), head(2))]), []);
        assert!(!held.is_empty());
    }
}
