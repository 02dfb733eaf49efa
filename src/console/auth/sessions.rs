//! Console sessions, in memory: a random 32-byte id in the cookie, its SHA-256 as the key,
//! a CSRF token per session, an idle limit and an absolute limit.
//!
//! A pure table: the time comes in as an argument ([`Instant`]), so the limits are tested
//! without waiting. It must not know about HTTP or the users file (the layer checks that
//! the session's user still exists with the same password).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::accounts::{constant_time_eq, hex, random_bytes, token_digest};
use crate::console::Role;

/// Default idle limit: a session unused for this long ends.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default absolute limit: a session ends this long after login, used or not.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions held at once; a login beyond it first ends the least recently used session.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions of one user at once; a new login beyond it ends that user's oldest session.
pub const MAX_SESSIONS_PER_USER: usize = 16;

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user's name.
    pub user: String,
    /// The role at login (the layer uses the users file's current role).
    pub role: Role,
    /// The user's password hash at login: a changed password ends the session.
    pub password_hash: String,
    /// The token every state-changing request must carry.
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    /// Whether `candidate` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), candidate.as_bytes())
    }
}

/// Why a session id was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No such session (never was, logged out, or removed long ago).
    Unknown,
    /// It existed and has just ended: unused for longer than the idle limit, or older than
    /// the absolute one. The caller writes the `session_expired` audit line.
    Expired {
        /// Its user.
        user: String,
        /// `idle` or `lifetime`.
        reason: &'static str,
    },
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    lifetime: Duration,
    by_key: HashMap<[u8; 32], Session>,
}

impl Sessions {
    /// An empty table with these limits.
    pub fn new(idle: Duration, lifetime: Duration) -> Sessions {
        Sessions { idle, lifetime, by_key: HashMap::new() }
    }

    /// Starts a session for `user`; returns its id (for the cookie) and its CSRF token.
    pub fn create(&mut self, user: &str, role: Role, password_hash: &str, now: Instant) -> (String, String) {
        self.sweep(now);
        let mut own: Vec<([u8; 32], Instant)> =
            self.by_key.iter().filter(|(_, s)| s.user == user).map(|(k, s)| (*k, s.created)).collect();
        if own.len() >= MAX_SESSIONS_PER_USER {
            own.sort_by_key(|(_, created)| *created);
            for (key, _) in own.iter().take(own.len() + 1 - MAX_SESSIONS_PER_USER) {
                self.by_key.remove(key);
            }
        }
        if self.by_key.len() >= MAX_SESSIONS {
            if let Some(key) = self.by_key.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) {
                self.by_key.remove(&key);
            }
        }
        let id = hex(&random_bytes::<32>());
        let csrf = hex(&random_bytes::<32>());
        let session = Session {
            user: user.to_owned(),
            role,
            password_hash: password_hash.to_owned(),
            csrf: csrf.clone(),
            created: now,
            last_used: now,
        };
        self.by_key.insert(token_digest(&id), session);
        (id, csrf)
    }

    /// The session with cookie value `id`, marked as used at `now`; an expired one is
    /// removed and reported once.
    pub fn touch(&mut self, id: &str, now: Instant) -> Result<Session, Lookup> {
        let key = token_digest(id);
        let Some(session) = self.by_key.get_mut(&key) else {
            return Err(Lookup::Unknown);
        };
        if let Some(reason) = expired(session, now, self.idle, self.lifetime) {
            let user = session.user.clone();
            self.by_key.remove(&key);
            return Err(Lookup::Expired { user, reason });
        }
        session.last_used = now;
        Ok(session.clone())
    }

    /// Ends the session with cookie value `id`; returns its user when there was one.
    pub fn remove(&mut self, id: &str) -> Option<String> {
        self.by_key.remove(&token_digest(id)).map(|session| session.user)
    }

    /// Ends every session of `user` (removed, or password changed).
    pub fn remove_user(&mut self, user: &str) -> usize {
        let before = self.by_key.len();
        self.by_key.retain(|_, session| session.user != user);
        before - self.by_key.len()
    }

    /// Removes expired sessions; returns (user, reason) of each.
    pub fn sweep(&mut self, now: Instant) -> Vec<(String, &'static str)> {
        let (idle, lifetime) = (self.idle, self.lifetime);
        let mut ended = Vec::new();
        self.by_key.retain(|_, session| match expired(session, now, idle, lifetime) {
            Some(reason) => {
                ended.push((session.user.clone(), reason));
                false
            }
            None => true,
        });
        ended
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

fn expired(session: &Session, now: Instant, idle: Duration, lifetime: Duration) -> Option<&'static str> {
    if now.saturating_duration_since(session.created) >= lifetime {
        Some("lifetime")
    } else if now.saturating_duration_since(session.last_used) >= idle {
        Some("idle")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn idle_and_absolute_limits() {
        let start = Instant::now();
        let mut sessions = Sessions::new(DEFAULT_IDLE, DEFAULT_LIFETIME);
        let (id, csrf) = sessions.create("ana", Role::Viewer, "h", start);
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        let session = sessions.touch(&id, start + 29 * MINUTE).unwrap();
        assert!(session.csrf_matches(&csrf) && !session.csrf_matches("x"));
        // Used every 29 minutes: alive until 12 hours after login.
        let mut at = start + 29 * MINUTE;
        while at + 29 * MINUTE < start + DEFAULT_LIFETIME {
            at += 29 * MINUTE;
            sessions.touch(&id, at).unwrap();
        }
        assert_eq!(
            sessions.touch(&id, start + DEFAULT_LIFETIME),
            Err(Lookup::Expired { user: "ana".into(), reason: "lifetime" })
        );
        assert_eq!(
            sessions.touch(&id, start + DEFAULT_LIFETIME).unwrap_err(),
            Lookup::Unknown,
            "reported once"
        );

        let (id, _) = sessions.create("ana", Role::Viewer, "h", start);
        assert_eq!(
            sessions.touch(&id, start + 30 * MINUTE),
            Err(Lookup::Expired { user: "ana".into(), reason: "idle" })
        );
        assert_eq!(sessions.touch("nonsense", start).unwrap_err(), Lookup::Unknown);
    }

    #[test]
    fn logout_sweep_and_bounds() {
        let start = Instant::now();
        let mut sessions = Sessions::new(MINUTE, DEFAULT_LIFETIME);
        let (id, _) = sessions.create("ana", Role::Operator, "h", start);
        assert_eq!(sessions.remove(&id).as_deref(), Some("ana"));
        assert!(sessions.touch(&id, start).is_err());
        let ids: Vec<String> = (0..MAX_SESSIONS_PER_USER + 2)
            .map(|_| sessions.create("bob", Role::Viewer, "h", start).0)
            .collect();
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_USER, "a user's oldest sessions give way");
        assert!(sessions.touch(ids.last().unwrap(), start).is_ok());
        sessions.create("cy", Role::Viewer, "h", start + MINUTE / 2);
        assert_eq!(sessions.sweep(start + MINUTE).len(), MAX_SESSIONS_PER_USER);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.remove_user("cy"), 1);
        assert!(sessions.is_empty());
    }
}
