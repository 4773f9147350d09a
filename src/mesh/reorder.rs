//! Judging reordered echo replies of one target, in a fixed 72 bytes.
//!
//! Owns the rule and its memory: a reply is reordered if the reply to a later-sent probe to the
//! same target arrived before it (by the engine's arrival order, not by the order in which
//! completions happen to be processed, which can differ when the receive loop and the sender's
//! catch-up read both drain the socket). Each such pair counts its earlier-sent reply once.
//! The replies to the last [`REORDER_WINDOW`] sends are remembered in a ring indexed by send
//! index, so a target costs the same whether its replies come in order or not, and nothing is
//! allocated (the list of notes this replaced was 232 bytes of heap per target).

/// How many recent sends per target are remembered to judge reordering.
pub const REORDER_WINDOW: u32 = 16;
const SLOTS: usize = REORDER_WINDOW as usize;
const _: () = assert!(SLOTS <= u16::BITS as usize);

/// `a` comes after `b` in a wrapping 32-bit sequence. Send indices and arrival numbers are kept
/// as their low 32 bits: the replies one ring holds span [`REORDER_WINDOW`] sends and one
/// timeout's arrivals, far below 2^31 apart.
fn wrapping_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The arrival numbers of the replies to the last [`REORDER_WINDOW`] sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArrivalRing {
    /// Slot `i` holds the arrival of the reply to the send index in the window that is `i`
    /// modulo [`REORDER_WINDOW`].
    arrivals: [u32; SLOTS],
    /// Bit `i`: slot `i` holds a reply.
    present: u16,
    /// Bit `i`: slot `i`'s reply was already counted as reordered.
    counted: u16,
    /// The newest send index with a reply in the ring.
    newest: u32,
}

impl ArrivalRing {
    /// The send index slot `slot` stands for: the one in the window congruent to it.
    fn send_index_of(&self, slot: usize) -> u32 {
        let back = self.newest.wrapping_sub(slot as u32) % REORDER_WINDOW;
        self.newest.wrapping_sub(back)
    }

    fn slots_present(&self) -> impl Iterator<Item = usize> + '_ {
        (0..SLOTS).filter(|slot| self.present & (1 << slot) != 0)
    }

    /// Notes the reply to send `send_index`, the engine's `arrival`-th accepted reply, and
    /// answers how many replies became reordered by it (itself, and earlier-sent replies that
    /// arrived after it but were processed before it).
    pub fn note(&mut self, send_index: u64, arrival: u64) -> u64 {
        // Truncation is the point: see [`wrapping_after`].
        let (send_index, arrival) = (send_index as u32, arrival as u32);
        let reordered_self = self.slots_present().any(|slot| {
            wrapping_after(self.send_index_of(slot), send_index)
                && wrapping_after(arrival, self.arrivals[slot])
        });
        let mut newly_reordered = u64::from(reordered_self);
        for slot in 0..SLOTS {
            let bit = 1 << slot;
            if self.present & bit != 0
                && self.counted & bit == 0
                && wrapping_after(send_index, self.send_index_of(slot))
                && wrapping_after(self.arrivals[slot], arrival)
            {
                self.counted |= bit;
                newly_reordered += 1;
            }
        }
        self.remember(send_index, arrival, reordered_self);
        newly_reordered
    }

    fn remember(&mut self, send_index: u32, arrival: u32, counted: bool) {
        if self.present == 0 {
            self.newest = send_index;
        } else if wrapping_after(send_index, self.newest) {
            // Slide the window forward: the slots of the sends it passes are forgotten.
            let advance = send_index.wrapping_sub(self.newest);
            if advance >= REORDER_WINDOW {
                (self.present, self.counted) = (0, 0);
            } else {
                for step in 1..=advance {
                    let slot = (self.newest.wrapping_add(step) % REORDER_WINDOW) as usize;
                    self.present &= !(1 << slot);
                    self.counted &= !(1 << slot);
                }
            }
            self.newest = send_index;
        } else if self.newest.wrapping_sub(send_index) >= REORDER_WINDOW {
            // Older than the window: judged above, not remembered.
            return;
        }
        let slot = (send_index % REORDER_WINDOW) as usize;
        self.arrivals[slot] = arrival;
        self.present |= 1 << slot;
        if counted {
            self.counted |= 1 << slot;
        } else {
            self.counted &= !(1 << slot);
        }
    }

    /// The send indices (low 32 bits) remembered now, oldest first.
    #[cfg(test)]
    pub fn remembered(&self) -> Vec<u32> {
        let mut indices: Vec<u32> = self
            .slots_present()
            .map(|slot| self.send_index_of(slot))
            .collect();
        indices.sort_by_key(|index| self.newest.wrapping_sub(*index));
        indices.reverse();
        indices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair rule applied to every reply at once: the reference the ring must agree with
    /// whenever no pair is more than the window apart.
    fn reordered_pairs(replies: &[(u64, u64)]) -> u64 {
        replies
            .iter()
            .filter(|(send, arrival)| {
                replies
                    .iter()
                    .any(|(other_send, other_arrival)| other_send > send && other_arrival < arrival)
            })
            .count() as u64
    }

    #[test]
    fn processing_order_does_not_change_the_count() {
        // Sent 0..12; arrivals shuffled within a few places, processed in yet another order.
        let replies: Vec<(u64, u64)> = [0, 2, 1, 3, 6, 4, 5, 7, 9, 8, 11, 10]
            .iter()
            .enumerate()
            .map(|(arrival, send)| (*send, 100 + arrival as u64))
            .collect();
        let expected = reordered_pairs(&replies);
        assert_eq!(expected, 5);
        for rotation in 0..replies.len() {
            let mut order = replies.clone();
            order.rotate_left(rotation);
            order.swap(0, rotation / 2);
            let mut ring = ArrivalRing::default();
            let counted: u64 = order.iter().map(|(s, a)| ring.note(*s, *a)).sum();
            assert_eq!(counted, expected, "processing order {order:?}");
        }
    }

    #[test]
    fn the_window_slides_and_forgets_only_what_fell_out() {
        let mut ring = ArrivalRing::default();
        for send in 0..40u64 {
            assert_eq!(ring.note(send, 1_000 + send), 0);
        }
        assert_eq!(ring.remembered(), (24..40).collect::<Vec<u32>>());
        // A jump further than the window forgets everything before it.
        ring.note(100, 2_000);
        assert_eq!(ring.remembered(), [100]);
        // A reply older than the window is still judged against what is remembered.
        assert_eq!(ring.note(50, 2_001), 1);
        assert_eq!(ring.remembered(), [100]);
        // Gaps (lost probes) leave their slots empty.
        ring.note(103, 2_002);
        assert_eq!(ring.remembered(), [100, 103]);
    }

    #[test]
    fn indices_and_arrivals_wrap_at_32_bits() {
        let base = u64::from(u32::MAX) - 3;
        let mut ring = ArrivalRing::default();
        let replies = [
            (base, base + 10),
            (base + 2, base + 11),
            (base + 1, base + 12),
        ];
        let counted: u64 = replies.iter().map(|(s, a)| ring.note(*s, *a)).sum();
        assert_eq!(counted, 1);
        assert_eq!(
            ring.note(base + 6, base + 13),
            0,
            "in order across the wrap"
        );
        assert_eq!(
            ring.remembered(),
            [
                base as u32,
                (base + 1) as u32,
                (base + 2) as u32,
                (base + 6) as u32
            ]
        );
        assert_eq!(std::mem::size_of::<ArrivalRing>(), 72);
    }
}
