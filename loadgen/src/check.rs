//! The correctness checker: every accepted message must reach every device of its recipient
//! exactly once, and in order per sender, recipient (a user or a line) and receiving device:
//! the order the hub promises is per queue, and a device reads several queues.
//!
//! Each message body starts with a [`Stamp`]: the sending device's index, the recipient, a
//! sequence number that sender increments per message to that recipient, and the intended
//! send time. The checker is told what was
//! accepted and what each device received, then counts lost, duplicated and reordered messages.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Bytes of a stamp at the start of every body.
pub const STAMP_LEN: usize = 24;

/// The recipient of a message to the run's line, in [`Stamp::to`].
pub const LINE: u32 = u32::MAX;

/// What a body carries so deliveries can be checked and timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending device's index.
    pub sender: u32,
    /// The recipient user's index, or [`LINE`].
    pub to: u32,
    /// The sender's message number to this recipient, from 1.
    pub seq: u64,
    /// When it was meant to be sent, nanoseconds since the run's start.
    pub intended_ns: u64,
}

impl Stamp {
    /// A body of `len` bytes (at least the stamp) starting with this stamp.
    pub fn body(&self, len: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(len.max(STAMP_LEN));
        body.extend_from_slice(&self.sender.to_be_bytes());
        body.extend_from_slice(&self.to.to_be_bytes());
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(&self.intended_ns.to_be_bytes());
        body.resize(len.max(STAMP_LEN), 0x5a);
        body
    }

    /// Reads the stamp at the start of a body.
    pub fn read(body: &[u8]) -> Option<Self> {
        if body.len() < STAMP_LEN {
            return None;
        }
        Some(Self {
            sender: u32::from_be_bytes(body[0..4].try_into().ok()?),
            to: u32::from_be_bytes(body[4..8].try_into().ok()?),
            seq: u64::from_be_bytes(body[8..16].try_into().ok()?),
            intended_ns: u64::from_be_bytes(body[16..24].try_into().ok()?),
        })
    }
}

/// Counts of what went wrong; all zero in a correct run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Accepted messages that some device of the recipient never received.
    pub lost: u64,
    /// Deliveries of a message a device had already received.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message of the same sender to that device.
    pub reordered: u64,
    /// Deliveries of a message that was never accepted (or not stamped).
    pub unexpected: u64,
}

impl Verdict {
    /// Whether the run was correct.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

/// What one device received of one sender's messages to one recipient: the highest seq so
/// far, and every seq.
type Stream = (u64, HashSet<u64>);

/// Collects accepted messages and deliveries.
#[derive(Debug, Default)]
pub struct Checker {
    /// Accepted messages by (sender, recipient, seq), and the devices that must receive each.
    accepted: HashMap<(u32, u32, u64), Vec<u32>>,
    /// Per receiving device: per (sender, recipient), the last seq received, and everything
    /// received.
    received: HashMap<u32, BTreeMap<(u32, u32), Stream>>,
    duplicated: u64,
    reordered: u64,
    /// Sends whose outcome is unknown (the answer never came): not required anywhere, and not
    /// unexpected if they arrive.
    uncertain: HashSet<(u32, u32, u64)>,
}

impl Checker {
    /// Records that the message `stamp` was accepted and must reach every one of `devices`.
    pub fn accepted(&mut self, stamp: Stamp, devices: Vec<u32>) {
        self.accepted.insert((stamp.sender, stamp.to, stamp.seq), devices);
    }

    /// Records that the send of `stamp` got no answer: it may or may not have been stored.
    pub fn uncertain(&mut self, stamp: Stamp) {
        self.uncertain.insert((stamp.sender, stamp.to, stamp.seq));
    }

    /// Deliveries the accepted messages call for.
    pub fn expected_deliveries(&self) -> u64 {
        self.accepted.values().map(|devices| devices.len() as u64).sum()
    }

    /// Records that `device` received the message `stamp`.
    pub fn received(&mut self, device: u32, stamp: Stamp) {
        let per_sender = self.received.entry(device).or_default();
        let (last, seen) = per_sender.entry((stamp.sender, stamp.to)).or_default();
        if !seen.insert(stamp.seq) {
            self.duplicated += 1;
            return;
        }
        if stamp.seq < *last {
            self.reordered += 1;
        }
        *last = (*last).max(stamp.seq);
    }

    /// The verdict over everything recorded.
    pub fn verdict(&self) -> Verdict {
        let mut lost = 0;
        for (&(sender, to, seq), devices) in &self.accepted {
            for device in devices {
                let got = self
                    .received
                    .get(device)
                    .and_then(|s| s.get(&(sender, to)))
                    .is_some_and(|(_, seen)| seen.contains(&seq));
                if !got {
                    lost += 1;
                }
            }
        }
        let mut unexpected = 0;
        for (device, senders) in &self.received {
            for (&(sender, to), (_, seen)) in senders {
                for seq in seen {
                    let expected = self
                        .accepted
                        .get(&(sender, to, *seq))
                        .is_some_and(|devices| devices.contains(device))
                        || self.uncertain.contains(&(sender, to, *seq));
                    if !expected {
                        unexpected += 1;
                    }
                }
            }
        }
        Verdict { lost, duplicated: self.duplicated, reordered: self.reordered, unexpected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(sender: u32, seq: u64) -> Stamp {
        Stamp { sender, to: 5, seq, intended_ns: seq * 10 }
    }

    #[test]
    fn a_stamp_survives_the_body() {
        let s = Stamp { sender: 7, to: LINE, seq: 99, intended_ns: 123_456 };
        let body = s.body(256);
        assert_eq!(body.len(), 256);
        assert_eq!(Stamp::read(&body), Some(s));
        assert_eq!(Stamp::read(&body[..10]), None);
    }

    #[test]
    fn a_correct_run_is_clean() {
        let mut checker = Checker::default();
        for seq in 1..=3 {
            checker.accepted(stamp(1, seq), vec![10, 11]);
        }
        for device in [10, 11] {
            for seq in 1..=3 {
                checker.received(device, stamp(1, seq));
            }
        }
        assert!(checker.verdict().is_clean());
    }

    #[test]
    fn a_lost_message_is_caught() {
        let mut checker = Checker::default();
        checker.accepted(stamp(1, 1), vec![10, 11]);
        checker.received(10, stamp(1, 1));
        assert_eq!(checker.verdict(), Verdict { lost: 1, ..Verdict::default() });
    }

    #[test]
    fn a_duplicated_message_is_caught() {
        let mut checker = Checker::default();
        checker.accepted(stamp(1, 1), vec![10]);
        checker.received(10, stamp(1, 1));
        checker.received(10, stamp(1, 1));
        assert_eq!(checker.verdict(), Verdict { duplicated: 1, ..Verdict::default() });
    }

    #[test]
    fn a_reordered_message_is_caught() {
        let mut checker = Checker::default();
        checker.accepted(stamp(1, 1), vec![10]);
        checker.accepted(stamp(1, 2), vec![10]);
        checker.received(10, stamp(1, 2));
        checker.received(10, stamp(1, 1));
        assert_eq!(checker.verdict(), Verdict { reordered: 1, ..Verdict::default() });
    }

    #[test]
    fn order_is_kept_per_recipient_not_across_recipients() {
        // A device reading its own queue and a line gets one sender's messages to each in
        // order, but the two streams may interleave either way.
        let mut checker = Checker::default();
        let to_line = |seq| Stamp { sender: 1, to: LINE, seq, intended_ns: 0 };
        checker.accepted(stamp(1, 1), vec![10]);
        checker.accepted(to_line(1), vec![10]);
        checker.accepted(to_line(2), vec![10]);
        checker.received(10, to_line(1));
        checker.received(10, to_line(2));
        checker.received(10, stamp(1, 1));
        assert!(checker.verdict().is_clean());
        checker.accepted(to_line(3), vec![10]);
        checker.accepted(to_line(4), vec![10]);
        checker.received(10, to_line(4));
        checker.received(10, to_line(3));
        assert_eq!(checker.verdict(), Verdict { reordered: 1, ..Verdict::default() });
    }

    #[test]
    fn a_send_without_an_answer_may_arrive_or_not() {
        let mut checker = Checker::default();
        checker.uncertain(stamp(1, 1));
        checker.uncertain(stamp(1, 2));
        checker.received(10, stamp(1, 2));
        assert!(checker.verdict().is_clean());
    }

    #[test]
    fn a_message_that_was_never_accepted_is_caught() {
        let mut checker = Checker::default();
        checker.received(10, stamp(3, 1));
        assert_eq!(checker.verdict(), Verdict { unexpected: 1, ..Verdict::default() });
    }
}
