//! When a connection must close for lack of progress: the idle and frame deadlines and the
//! run of bytes outside frames, as a pure state machine.
//!
//! Owns the rules that move those deadlines. It does no I/O, reads no clock and logs
//! nothing: [`Connection::run`](super::connection) tells it what each read did and at which
//! [`Instant`], and asks it for the next deadline and, when that passes, why to close. That
//! keeps every rule a one-line unit test (see the tests at the bottom).
//!
//! The rules:
//! - Between frames the peer has `idle_timeout` from its last traffic.
//! - A frame must end within `frame_timeout` of the read that started it; progress inside the
//!   frame does not extend that (a slowloris trickle must not).
//! - Bytes between frames (keep-alive CR/LF, NUL) are not traffic: a peer that only trickles
//!   those is idle, or it could hold a connection slot for ever.
//! - Time spent on the store and on writing ACKs is ours, not the peer's: after a read whose
//!   frames were handled, both deadlines count from when that handling ended.
//! - More than `max_junk_run` bytes outside frames in a row (since the last frame) means the
//!   peer does not speak MLLP.
//! - On shutdown, a connection between frames closes at once; one inside a frame is read to
//!   the frame's end first ([`Deadlines::in_frame`]).

use std::time::{Duration, Instant};

/// Bytes outside frames tolerated in a row before the peer is judged not to speak MLLP.
pub const MAX_JUNK_RUN: u64 = 64 * 1024;

/// The limits of one listener profile that the deadlines enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `idle_timeout`: longest silence between frames.
    pub idle_timeout: Duration,
    /// `frame_timeout`: longest time from the read that starts a frame to its end.
    pub frame_timeout: Duration,
    /// Longest run of bytes outside frames (see [`MAX_JUNK_RUN`]).
    pub max_junk_run: u64,
}

/// Why the deadlines say a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No traffic for this long (at least `idle_timeout`).
    Idle(Duration),
    /// A frame did not end within `frame_timeout` (the limit is carried).
    FrameTimeout(Duration),
    /// This many bytes outside frames in a row.
    TooMuchJunk(u64),
}

/// What one read did, as the connection saw it after feeding the bytes to the decoder and
/// handling every frame they completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// When the bytes arrived.
    pub at: Instant,
    /// Bytes read.
    pub len: u64,
    /// How many of them lay outside any frame.
    pub junk: u64,
    /// Whether a frame is open (started, not yet ended) after this read.
    pub mid_frame: bool,
    /// The frames this read completed, if any.
    pub handled: Option<Handled>,
}

/// The frames one read completed (messages and frame errors alike), all handled and
/// answered before the connection reports the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// When handling the last of them ended (stored, ACK written).
    pub at: Instant,
    /// Bytes outside frames after the last of them, in this read.
    pub junk_after: u64,
}

/// The deadline state of one connection.
#[derive(Debug, Clone)]
pub struct Deadlines {
    limits: Limits,
    /// Last traffic (or the connection's start, or the end of handling a frame).
    last_activity: Instant,
    /// When the open frame started counting, if one is open.
    frame_started: Option<Instant>,
    /// Bytes outside frames since the last frame (or since the start).
    junk_run: u64,
}

impl Deadlines {
    /// The state of a connection that started serving at `now`.
    pub fn new(limits: Limits, now: Instant) -> Deadlines {
        Deadlines { limits, last_activity: now, frame_started: None, junk_run: 0 }
    }

    /// The instant at which [`Deadlines::check`] starts to report a close, unless a read
    /// comes first.
    pub fn deadline(&self) -> Instant {
        match self.frame_started {
            Some(start) => start + self.limits.frame_timeout,
            None => self.last_activity + self.limits.idle_timeout,
        }
    }

    /// Why the connection must close at `now`, or `None` while its deadline has not passed
    /// (so a timer that fires early closes nothing).
    pub fn check(&self, now: Instant) -> Option<Close> {
        if now < self.deadline() {
            return None;
        }
        Some(match self.frame_started {
            Some(_) => Close::FrameTimeout(self.limits.frame_timeout),
            None => Close::Idle(now.saturating_duration_since(self.last_activity)),
        })
    }

    /// Whether a frame is open: shutdown then waits for its end (bounded by the frame
    /// deadline) instead of closing at once.
    pub fn in_frame(&self) -> bool {
        self.frame_started.is_some()
    }

    /// Takes in one read; an error when the bytes outside frames now exceed the limit.
    pub fn on_read(&mut self, read: &Read) -> Result<(), Close> {
        self.junk_run = match read.handled {
            Some(handled) => handled.junk_after,
            None => self.junk_run + read.junk,
        };
        if self.junk_run > self.limits.max_junk_run {
            return Err(Close::TooMuchJunk(self.junk_run));
        }
        // After handling frames, the deadlines count from when that ended.
        let now = read.handled.map_or(read.at, |handled| handled.at);
        if read.handled.is_some() || read.junk < read.len {
            self.last_activity = now;
        }
        self.frame_started = match (read.mid_frame, self.frame_started) {
            // The same frame as before: its deadline stays.
            (true, Some(start)) if read.handled.is_none() => Some(start),
            // A new frame (possibly begun right behind one that was just handled).
            (true, _) => Some(now),
            (false, _) => None,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const FRAME: Duration = Duration::from_secs(10);
    const LIMITS: Limits = Limits { idle_timeout: IDLE, frame_timeout: FRAME, max_junk_run: 100 };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A read of `len` bytes at `at`, `junk` of them outside frames, completing no frame.
    fn read(at: Instant, len: u64, junk: u64, mid_frame: bool) -> Read {
        Read { at, len, junk, mid_frame, handled: None }
    }

    /// A read at `at` that completed frames whose handling ended at `done`.
    fn completing(at: Instant, done: Instant, junk_after: u64, mid_frame: bool) -> Read {
        Read { at, len: 200, junk: junk_after, mid_frame, handled: Some(Handled { at: done, junk_after }) }
    }

    #[test]
    fn a_silent_connection_closes_at_the_idle_timeout_from_its_start() {
        let t0 = Instant::now();
        let d = Deadlines::new(LIMITS, t0);
        assert_eq!(d.deadline(), t0 + IDLE);
        assert_eq!(d.check(t0 + IDLE - Duration::from_nanos(1)), None);
        assert_eq!(d.check(t0 + IDLE), Some(Close::Idle(IDLE)));
        assert!(!d.in_frame());
    }

    #[test]
    fn a_late_timer_reports_the_whole_silence() {
        let t0 = Instant::now();
        let d = Deadlines::new(LIMITS, t0);
        assert_eq!(d.check(t0 + IDLE + secs(2)), Some(Close::Idle(IDLE + secs(2))));
    }

    #[test]
    fn traffic_between_frames_moves_the_idle_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        // A whole frame in one read, answered 1 s later.
        d.on_read(&completing(t0 + secs(20), t0 + secs(21), 0, false)).unwrap();
        assert_eq!(d.deadline(), t0 + secs(21) + IDLE);
        assert_eq!(d.check(t0 + secs(40)), None);
    }

    #[test]
    fn bytes_between_frames_are_not_traffic() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        // A keep-alive CR every 5 s: the idle deadline stays where it was.
        for n in 1..6 {
            d.on_read(&read(t0 + secs(5 * n), 1, 1, false)).unwrap();
            assert_eq!(d.deadline(), t0 + IDLE);
        }
        assert_eq!(d.check(t0 + IDLE), Some(Close::Idle(IDLE)));
    }

    #[test]
    fn a_read_with_junk_and_the_start_of_a_frame_is_traffic() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0 + secs(3), 10, 2, true)).unwrap();
        assert!(d.in_frame());
        assert_eq!(d.deadline(), t0 + secs(3) + FRAME);
    }

    #[test]
    fn a_frame_must_end_within_the_frame_timeout_of_the_read_that_started_it() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0 + secs(1), 20, 0, true)).unwrap();
        // A slowloris trickle inside the frame does not extend it.
        for n in 2..11 {
            d.on_read(&read(t0 + secs(n), 1, 0, true)).unwrap();
        }
        assert_eq!(d.deadline(), t0 + secs(1) + FRAME);
        assert_eq!(d.check(t0 + secs(1) + FRAME - Duration::from_nanos(1)), None);
        assert_eq!(d.check(t0 + secs(1) + FRAME), Some(Close::FrameTimeout(FRAME)));
    }

    #[test]
    fn the_frame_deadline_replaces_the_idle_one_while_a_frame_is_open() {
        // A frame timeout longer than the idle timeout still applies in full.
        let limits = Limits { idle_timeout: secs(5), ..LIMITS };
        let t0 = Instant::now();
        let mut d = Deadlines::new(limits, t0);
        d.on_read(&read(t0, 20, 0, true)).unwrap();
        assert_eq!(d.check(t0 + secs(6)), None);
        assert_eq!(d.check(t0 + FRAME), Some(Close::FrameTimeout(FRAME)));
    }

    #[test]
    fn a_finished_frame_returns_to_the_idle_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0 + secs(1), 20, 0, true)).unwrap();
        d.on_read(&completing(t0 + secs(2), t0 + secs(2), 0, false)).unwrap();
        assert!(!d.in_frame());
        assert_eq!(d.deadline(), t0 + secs(2) + IDLE);
    }

    #[test]
    fn time_spent_storing_and_answering_is_not_the_peers() {
        // The store took longer than both timeouts; the peer answers promptly after the ACK.
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        let done = t0 + IDLE + FRAME;
        d.on_read(&completing(t0, done, 0, false)).unwrap();
        assert_eq!(d.check(done + secs(1)), None);
        assert_eq!(d.deadline(), done + IDLE);
    }

    #[test]
    fn a_frame_begun_behind_a_slow_one_counts_from_the_end_of_its_handling() {
        // One read: a whole frame (stored slowly) and the start of the next.
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        let done = t0 + FRAME + secs(5);
        d.on_read(&completing(t0, done, 0, true)).unwrap();
        assert!(d.in_frame());
        assert_eq!(d.deadline(), done + FRAME);
        assert_eq!(d.check(done + secs(1)), None);
    }

    #[test]
    fn a_frame_that_ends_while_the_next_begins_restarts_the_frame_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0, 20, 0, true)).unwrap();
        // 8 s later: the rest of that frame and the head of another.
        d.on_read(&completing(t0 + secs(8), t0 + secs(8), 0, true)).unwrap();
        assert_eq!(d.deadline(), t0 + secs(8) + FRAME);
    }

    #[test]
    fn junk_in_a_row_beyond_the_limit_closes() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0, 60, 60, false)).unwrap();
        d.on_read(&read(t0, 40, 40, false)).unwrap();
        assert_eq!(d.on_read(&read(t0, 1, 1, false)), Err(Close::TooMuchJunk(101)));
    }

    #[test]
    fn a_frame_ends_the_junk_run_and_junk_after_it_starts_the_next() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0, 90, 90, false)).unwrap();
        // A frame, then 30 bytes of junk behind it in the same read.
        d.on_read(&completing(t0, t0, 30, false)).unwrap();
        d.on_read(&read(t0, 70, 70, false)).unwrap();
        assert_eq!(d.on_read(&read(t0, 1, 1, false)), Err(Close::TooMuchJunk(101)));
    }

    #[test]
    fn junk_inside_a_read_that_completes_a_frame_counts_only_after_the_frame() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0, 100, 100, false)).unwrap();
        // 80 more bytes of junk, then a frame, then nothing: the run is over.
        let mut with_frame = completing(t0, t0, 0, false);
        with_frame.junk = 80;
        d.on_read(&with_frame).unwrap();
        d.on_read(&read(t0, 100, 100, false)).unwrap();
    }

    #[test]
    fn junk_alone_never_opens_a_frame() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(LIMITS, t0);
        d.on_read(&read(t0 + secs(1), 50, 50, false)).unwrap();
        assert!(!d.in_frame());
    }
}
