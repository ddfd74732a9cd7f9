//! Sequence numbers and the bounded replay ring of one session (DESIGN §5).
//!
//! Every event gets the next `seq` (from 1, only growing, continued across restarts from the
//! stored `last_seq`). The ring keeps the newest events within both an event cap and a byte
//! cap; the newest event is always kept, even alone over the byte cap, so a reconnecting client
//! can get the line that was just sent. Frames are shared (`ByteString` is reference-counted),
//! so the ring costs one pointer per event beyond the frames themselves.

use std::collections::VecDeque;

use bytestring::ByteString;

/// What a client reconnecting with `after` should get from the ring.
#[derive(Debug, Default)]
pub struct Replay {
    /// `Some((from, to))` when events it asked for have left the ring.
    pub gap: Option<(u64, u64)>,
    /// Retained frames with `seq > after`, in order.
    pub frames: Vec<ByteString>,
}

/// The ring.
#[derive(Debug)]
pub struct ReplayRing {
    events: VecDeque<(u64, ByteString)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    last_seq: u64,
}

impl ReplayRing {
    /// An empty ring whose next `seq` is `last_seq + 1`.
    pub fn new(last_seq: u64, max_events: usize, max_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
            last_seq,
        }
    }

    /// The last `seq` handed out.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Hands out the next `seq`; the caller builds the frame with it and calls [`Self::push`].
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Retains a frame for `seq` (from [`Self::next_seq`]), dropping the oldest beyond the caps.
    pub fn push(&mut self, seq: u64, frame: ByteString) {
        self.bytes += frame.len();
        self.events.push_back((seq, frame));
        while self.events.len() > 1
            && (self.events.len() > self.max_events || self.bytes > self.max_bytes)
        {
            if let Some((_, old)) = self.events.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Bytes retained.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What a client that has seen everything up to `after` should receive now. A client
    /// claiming to be ahead of `last_seq` (it saw events a crashed daemon never persisted)
    /// gets nothing from the ring, and then live events.
    pub fn since(&self, after: u64) -> Replay {
        let first = self
            .events
            .front()
            .map_or(self.last_seq + 1, |(seq, _)| *seq);
        let gap = (after + 1 < first).then_some((after + 1, first - 1));
        let frames = self
            .events
            .iter()
            .filter(|(seq, _)| *seq > after)
            .map(|(_, f)| f.clone())
            .collect();
        Replay { gap, frames }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(n: u64, max_events: usize, max_bytes: usize) -> ReplayRing {
        let mut ring = ReplayRing::new(0, max_events, max_bytes);
        for _ in 0..n {
            let seq = ring.next_seq();
            ring.push(seq, ByteString::from(format!("{seq:04}")));
        }
        ring
    }

    #[test]
    fn replays_exactly_what_follows_after() {
        let ring = ring_with(10, 100, 1000);
        let r = ring.since(7);
        assert_eq!(r.gap, None);
        assert_eq!(r.frames, vec!["0008", "0009", "0010"]);
        assert!(ring.since(10).frames.is_empty());
        assert_eq!(ring.since(0).frames.len(), 10);
    }

    #[test]
    fn dropped_events_are_reported_as_a_gap() {
        let ring = ring_with(10, 4, 1000);
        let r = ring.since(2);
        assert_eq!(r.gap, Some((3, 6)));
        assert_eq!(r.frames, vec!["0007", "0008", "0009", "0010"]);
        assert_eq!(ring.since(6).gap, None);
    }

    #[test]
    fn the_byte_cap_holds_but_the_newest_event_stays() {
        let mut ring = ring_with(10, 100, 12);
        assert_eq!(ring.bytes(), 12);
        assert_eq!(ring.since(0).frames, vec!["0008", "0009", "0010"]);
        let seq = ring.next_seq();
        ring.push(seq, ByteString::from("x".repeat(100)));
        assert_eq!(ring.since(0).frames.len(), 1);
        assert_eq!(ring.since(0).gap, Some((1, 10)));
    }

    #[test]
    fn after_a_restart_seq_continues_and_old_events_are_a_gap() {
        let mut ring = ReplayRing::new(41, 10, 1000);
        assert_eq!(ring.since(0).gap, Some((1, 41)));
        assert_eq!(ring.since(41).gap, None);
        assert_eq!(ring.since(50).frames.len(), 0);
        assert_eq!(ring.next_seq(), 42);
    }
}
