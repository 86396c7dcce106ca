//! What a burst asks of a split ring before it pops: how many chains to try
//! for, and the lines it will need, taken ahead.
use std::ops::Range;

use pmd_bridge::cycles::tsc_after_loads;
use pmd_bridge::guest_mem::{GuestMemory, Gpa, Reader};

use super::{Desc, RingError, SplitQueue, UsedAhead, DESC_SIZE, VRING_DESC_F_INDIRECT};

impl SplitQueue {
    /// How many chains, at most `max`, a burst should try to take: those
    /// available (none: the ring is idle).
    pub fn to_take(&mut self, mem: &GuestMemory, max: usize) -> Result<usize, RingError> {
        Ok((self.available(mem)? as usize).min(max))
    }

    /// Starts loading the descriptors of the next `n` chains (of those the
    /// last avail->idx read showed), and taking the used entries `used`
    /// says the burst writes: a hint, never a fault or an error.
    pub fn prefetch_next(&self, mem: &GuestMemory, n: usize, used: UsedAhead) {
        if let (Some(avail), Some(table)) = (mem.reader(&self.avail, 2), mem.reader(&self.desc, 8)) {
            for head in self.known_heads(&avail, n) {
                table.prefetch(head as usize * DESC_SIZE as usize);
            }
        }
        // Fewer heads known than asked for: avail->idx and the entries
        // after those known, for `prefetch_buffers` to read a while later.
        let known = self.known();
        if known < n {
            let at = (self.next_avail.0 as usize + known) & (self.size as usize - 1);
            mem.prefetch_span(&self.avail, 0, 4, false);
            mem.prefetch_span(&self.avail, 4 + 2 * at, 2 * (n - known).min(self.size as usize - at), false);
        }
        // The used entries these chains will take (eight to a line).
        let (mask, mut n) = (self.size as usize - 1, n.min(self.size as usize));
        if used == UsedAhead::One {
            n = n.min(1);
        }
        let mut k = 0;
        while k < n {
            mem.prefetch_write_at(&self.used, 4 + 8 * ((self.next_used.0 as usize + k) & mask));
            k += 8;
        }
        if n > 1 {
            mem.prefetch_write_at(&self.used, 4 + 8 * ((self.next_used.0 as usize + n - 1) & mask));
        }
    }

    /// avail->idx read again, timed: the cycles its line took to come if
    /// the guest had moved it since our last read (a line its core wrote),
    /// else None (and on an error, which is the pop's to meet).
    pub fn time_avail(&mut self, mem: &GuestMemory) -> Option<u64> {
        let before = self.avail_seen;
        let t0 = tsc_after_loads();
        self.available(mem).ok()?;
        (self.avail_seen != before).then(|| tsc_after_loads() - t0)
    }

    /// Starts taking, for writing, the first `bytes` bytes of the buffers
    /// the chains `chains` counts from the next begin with (call it a while
    /// after `prefetch_next`, when their descriptors have come in); how far
    /// that looked, counted from the next chain (`chains.start` at least).
    /// With fewer heads known than `chains.end`, avail->idx is read here
    /// rather than by the pop that follows: known heads alone
    /// were a quarter of those needed in `vswitch-bench` 2vm 64 B, whose
    /// guests offer receive buffers as fast as the switch takes them.
    pub fn prefetch_buffers(&mut self, mem: &GuestMemory, chains: Range<usize>, bytes: u64) -> usize {
        // An error is the pop's to meet.
        if self.known() < chains.end {
            let _ = self.available(mem);
        }
        let (Some(avail), Some(table)) = (mem.reader(&self.avail, 2), mem.reader(&self.desc, 8)) else { return chains.start };
        let mut seen = chains.start;
        for head in self.known_heads(&avail, chains.end).skip(chains.start) {
            seen += 1;
            if let Some(d) = table.words_at::<2>(head as usize * DESC_SIZE as usize).map(Desc::split) {
                if !d.has(VRING_DESC_F_INDIRECT) {
                    mem.prefetch_write(Gpa(d.addr), (d.len as u64).min(bytes));
                }
            }
        }
        seen
    }

    /// The heads of the next `n` chains known available (up to the last
    /// avail->idx read) that lie in the table, read through `avail`. Not
    /// one more read of avail->idx for `prefetch_next`'s hint: a demand
    /// load of a line the guest keeps writing, it cost `vswitch-bench` 2vm
    /// split 64 B a third more cycles a packet (108 -> 143, medians of 11
    /// near rounds); `prefetch_buffers` reads it instead of the pop, later,
    /// its line taken ahead.
    #[inline(always)]
    fn known_heads<'r>(&self, avail: &'r Reader, n: usize) -> impl Iterator<Item = u16> + 'r {
        let (at, mask, size) = (self.next_avail.0 as usize, self.size as usize - 1, self.size);
        let known = self.known();
        (0..n.min(known)).map_while(move |k| avail.u16_at(4 + 2 * ((at + k) & mask))).filter(move |&h| h < size)
    }
}
