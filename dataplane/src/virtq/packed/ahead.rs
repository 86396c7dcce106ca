//! What a burst asks of a packed ring before it pops: how many chains to
//! try for, and the lines it will need, taken ahead.
use std::ops::Range;

use pmd_bridge::guest_mem::{GuestMemory, Gpa};

use super::{flags_at, is_avail, PackedQueue, DESC_SIZE};
use crate::virtq::{RingError, UsedAhead};

impl PackedQueue {
    /// How many chains, at most `max`, a burst should try to take: `max`
    /// once the next slot is available, none while it is not. Not how
    /// many are: `pop_singles` reads each slot's flags with its
    /// descriptor, and a scan first (`available`) read them twice, 10
    /// instructions a frame of `--bench vm2vm` 60 B.
    pub fn to_take(&mut self, mem: &GuestMemory, max: usize) -> Result<usize, RingError> {
        if self.seen == 0 {
            let head = self.next_avail;
            if !is_avail(mem.span_u16_acquire(&self.ring, flags_at(head.slot))?, head.wrap) {
                return Ok(0);
            }
            self.seen = 1;
        }
        Ok(max)
    }

    /// Starts loading the ring slots the next `n` chains begin with (at
    /// least): a hint, never a fault or an error.
    pub fn prefetch_next(&self, mem: &GuestMemory, n: usize, used: UsedAhead) {
        // Their lines, up to the lap's end, then from the ring's start:
        // taken for writing when a used entry overwrites each chain's
        // slots later. Not for one used entry a burst: taken from a guest
        // still writing the burst's last descriptors, the lines cost it
        // and the switch a transfer each way, and the burst came shorter
        // (`vswitch-bench` 2vm packed 64 B, polls of a slow guest picked
        // at random to one way or the other: 29.75 frames a poll and 130.2
        // cycles a frame taken for writing, 30.92 and 125.4 for reading).
        let (slot, size, n) = (self.next_avail.slot as usize, self.size as usize, n.min(self.size as usize));
        let (first, write) = (n.min(size - slot), used == UsedAhead::Each);
        mem.prefetch_span(&self.ring, slot * DESC_SIZE as usize, first * DESC_SIZE as usize, write);
        if first < n {
            mem.prefetch_span(&self.ring, 0, (n - first) * DESC_SIZE as usize, write);
        }
    }

    /// Starts taking, for writing, the first `bytes` bytes of the buffers
    /// of the slots `chains` counts from the next, up to the first whose
    /// flags do not say it is available: one not yet offered holds a buffer
    /// of the last lap, which the guest may have freed; how far that
    /// looked, counted from the next slot (`chains.start` at least). A hint:
    /// the flags are read without ordering, and an indirect table's address
    /// is harmless to take.
    pub fn prefetch_buffers(&mut self, mem: &GuestMemory, chains: Range<usize>, bytes: u64) -> usize {
        let Some(ring) = mem.reader(&self.ring, 8) else { return chains.start };
        let (mut at, n) = (self.next_avail, chains.end.min(self.size as usize));
        let mut seen = chains.start;
        at.advance(seen.min(n) as u16, self.size);
        while seen < n {
            // The slots up to the lap's end, the wrap not checked at each.
            let run = (n - seen).min((self.size - at.slot) as usize);
            for slot in at.slot..at.slot + run as u16 {
                let Some([addr, w]) = ring.words_at::<2>(slot as usize * DESC_SIZE as usize) else { return seen };
                if !is_avail((w >> 48) as u16, at.wrap) {
                    return seen;
                }
                mem.prefetch_write(Gpa(addr), (w as u32 as u64).min(bytes));
                seen += 1;
            }
            at.advance(run as u16, self.size);
        }
        seen
    }
}
