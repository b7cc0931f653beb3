//! The replay clock: which recorded events are due, given the screen time that has passed, the
//! playback speed, and jumps to the next round or context. It hands out index ranges; the app
//! folds those records into its state exactly as it folds live ones.

use crate::record::{Event, Record};
use std::ops::Range;

/// Playback speeds, slowest first.
pub const SPEEDS: [f64; 7] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// The longest a recorded pause may take on screen, in seconds: a human thinking for ten
/// minutes before approving replays as a short wait.
pub const MAX_GAP_SECS: f64 = 2.0;

#[derive(Clone, Debug)]
pub struct Replay {
    records: Vec<Record>,
    /// Index of the next record to fold.
    next: usize,
    playing: bool,
    speed: usize,
    /// Screen seconds spent waiting since the last record was folded.
    waited: f64,
}

impl Replay {
    /// A replay at its start, playing at 1x.
    pub fn new(records: Vec<Record>) -> Replay {
        Replay {
            records,
            next: 0,
            playing: true,
            speed: 0,
            waited: 0.0,
        }
    }

    /// Starts at the listed speed nearest to `speed` (1x to 100x).
    pub fn with_speed(mut self, speed: f64) -> Replay {
        self.speed = SPEEDS
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - speed).abs().total_cmp(&(b.1 - speed).abs()))
            .map(|(i, _)| i)
            .unwrap_or(0);
        self
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn is_playing(&self) -> bool {
        self.playing
    }

    pub fn set_playing(&mut self, playing: bool) {
        self.playing = playing;
    }

    pub fn toggle(&mut self) {
        self.playing = !self.playing;
    }

    pub fn speed(&self) -> f64 {
        SPEEDS[self.speed]
    }

    pub fn faster(&mut self) {
        self.speed = (self.speed + 1).min(SPEEDS.len() - 1);
    }

    pub fn slower(&mut self) {
        self.speed = self.speed.saturating_sub(1);
    }

    /// Records folded so far, and how many there are.
    pub fn progress(&self) -> (usize, usize) {
        (self.next, self.records.len())
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.records.len()
    }

    /// The session time shown on screen: that of the last folded record.
    pub fn position(&self) -> f64 {
        self.next
            .checked_sub(1)
            .and_then(|i| self.records.get(i))
            .map_or(0.0, |r| r.t)
    }

    pub fn duration(&self) -> f64 {
        self.records.last().map_or(0.0, |r| r.t)
    }

    fn previous_t(&self) -> f64 {
        match self.next {
            // The first record is due at once, whatever its timestamp.
            0 => self.records.first().map_or(0.0, |r| r.t),
            n => self.records[n - 1].t,
        }
    }

    /// Lets `dt` seconds of screen time pass; returns the records now due.
    pub fn advance(&mut self, dt: f64) -> Range<usize> {
        let start = self.next;
        if !self.playing || !dt.is_finite() || dt <= 0.0 {
            return start..start;
        }
        let mut budget = dt;
        while let Some(record) = self.records.get(self.next) {
            let gap = (record.t - self.previous_t()).max(0.0);
            let needed = (gap / self.speed()).min(MAX_GAP_SECS);
            if self.waited + budget >= needed {
                budget -= (needed - self.waited).max(0.0);
                self.waited = 0.0;
                self.next += 1;
            } else {
                self.waited += budget;
                break;
            }
        }
        if self.is_done() {
            self.playing = false;
        }
        start..self.next
    }

    /// Everything up to and including the next record matching `target` (or to the end).
    fn jump(&mut self, target: impl Fn(&Event) -> bool) -> Range<usize> {
        let start = self.next;
        let end = self.records[start..]
            .iter()
            .position(|r| target(&r.event))
            .map_or(self.records.len(), |i| start + i + 1);
        self.next = end;
        self.waited = 0.0;
        start..end
    }

    pub fn next_round(&mut self) -> Range<usize> {
        self.jump(|e| matches!(e, Event::RoundStarted { .. }))
    }

    pub fn next_context(&mut self) -> Range<usize> {
        self.jump(|e| matches!(e, Event::ContextStarted { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunMode;

    fn rec(t: f64, event: Event) -> Record {
        Record { t, event }
    }

    fn warn(t: f64) -> Record {
        rec(
            t,
            Event::Warning {
                message: format!("{t}"),
            },
        )
    }

    #[test]
    fn records_come_due_at_their_time_scaled_by_speed() {
        let mut r = Replay::new(vec![warn(0.0), warn(1.0), warn(1.5), warn(3.0)]);
        assert_eq!(r.advance(0.01), 0..1);
        assert_eq!(r.advance(0.5), 1..1);
        // 1.11 s waited: the record at 1.0 is due; 0.11 s count towards the next gap.
        assert_eq!(r.advance(0.6), 1..2);
        r.faster();
        assert_eq!(r.speed(), 2.0);
        // At 2x the gaps of 0.5 s and 1.5 s take 0.25 s and 0.75 s: 0.14 + 0.75 more.
        assert_eq!(r.advance(0.88), 2..3);
        assert_eq!(r.advance(0.02), 3..4);
        assert!(r.is_done());
        assert!(!r.is_playing());
    }

    #[test]
    fn long_idle_gaps_are_capped() {
        let mut r = Replay::new(vec![warn(0.0), warn(600.0)]);
        assert_eq!(r.advance(0.1), 0..1);
        assert_eq!(r.advance(MAX_GAP_SECS - 0.2), 1..1);
        assert_eq!(r.advance(0.2), 1..2);
    }

    #[test]
    fn paused_replay_does_not_move() {
        let mut r = Replay::new(vec![warn(0.0), warn(0.1)]);
        r.toggle();
        assert_eq!(r.advance(10.0), 0..0);
        r.toggle();
        assert_eq!(r.advance(10.0), 0..2);
    }

    #[test]
    fn a_starting_speed_snaps_to_the_nearest_listed_one() {
        assert_eq!(Replay::new(Vec::new()).with_speed(9.0).speed(), 10.0);
        assert_eq!(Replay::new(Vec::new()).with_speed(0.1).speed(), 1.0);
        assert_eq!(Replay::new(Vec::new()).with_speed(1e6).speed(), 100.0);
    }

    #[test]
    fn speed_stays_within_1x_and_100x() {
        let mut r = Replay::new(vec![]);
        r.slower();
        assert_eq!(r.speed(), 1.0);
        for _ in 0..20 {
            r.faster();
        }
        assert_eq!(r.speed(), 100.0);
        r.slower();
        assert_eq!(r.speed(), 50.0);
    }

    #[test]
    fn jumps_fold_up_to_the_next_round_or_context() {
        let round = |t, round| rec(t, Event::RoundStarted { round, contexts: 1 });
        let records = vec![
            round(0.0, 0),
            warn(1.0),
            round(2.0, 1),
            warn(3.0),
            rec(
                4.0,
                Event::ModeChanged {
                    mode: RunMode::Auto,
                },
            ),
        ];
        let mut r = Replay::new(records);
        assert_eq!(r.next_round(), 0..1);
        assert_eq!(r.next_round(), 1..3);
        assert_eq!(r.position(), 2.0);
        assert_eq!(r.next_round(), 3..5, "no further round: to the end");
        assert_eq!(r.next_context(), 5..5);
    }
}
