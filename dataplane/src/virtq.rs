//! A split virtqueue walked by the switch itself (the copy-once datapath).
//!
//! The guest is not trusted. Every descriptor is read once into a local copy
//! (the guest may rewrite it meanwhile), every index is range-checked, and
//! every buffer is checked to lie in guest memory before anyone touches it.
//! A walk is bounded three ways: by the ring size (a `next` loop ends
//! there), by an indirect table's entry count (a loop inside it ends there),
//! and by `MAX_DESCS` buffer descriptors for the whole chain, so a chain
//! costs at most `MAX_DESCS + 2` descriptor loads whatever the guest wrote
//! (one over the cap, and an INDIRECT one).
//! A zero-length buffer is refused: it carries nothing and would let a chain
//! cost loads without adding a byte.
//!
//! Indirect tables (VIRTIO_RING_F_INDIRECT_DESC, 2.6.5.3) are followed only
//! when negotiated: the INDIRECT descriptor must be the last of its chain
//! (it may not have NEXT; at the head it is the whole chain, as Linux uses
//! it), its length a non-zero multiple of 16 bytes, its table in one region
//! of guest memory, with no INDIRECT inside (no nesting) and every `next`
//! inside the table. Its own WRITE flag is ignored; the table's descriptors
//! follow the queue's direction like direct ones.
//!
//! Interrupts: without EVENT_IDX the guest's NO_INTERRUPT flag decides; with
//! it (2.6.7, 2.6.10) the guest's `used_event` does, checked against the used
//! index we had reached at the previous check. Kicks: we poll, so we never
//! ask for one (see `suppress_kicks`).
//!
//! A bad chain is handed back to the caller to return with length 0 and
//! count; a ring whose own state is impossible (an avail index more than the
//! ring size ahead) marks the queue broken. Layout and rules: VIRTIO 1.1, 2.6.
//! Packed rings (2.7) are walked by `PackedQueue` with the same checks;
//! `Virtqueue` holds either kind.
use std::num::Wrapping;

use pmd_bridge::guest_mem::{full_fence, GuestMemory, Gpa, Reader, Span};

pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// avail->flags: the guest asks not to be interrupted.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// used->flags: we ask the guest not to kick us (we poll).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// VIRTIO_RING_F_INDIRECT_DESC and VIRTIO_RING_F_EVENT_IDX, as feature bits.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// VIRTIO_F_IN_ORDER: the device uses buffers in the order they were made
/// available (the driver may then skip reading which ones came back).
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
/// Most spans a chain keeps; more are refused (a 9000-byte frame in 2 KB
/// buffers needs 5; a buffer across a region boundary takes two).
pub const MAX_SEGS: usize = 64;
/// Most buffer descriptors in one chain, direct and indirect together; more
/// are refused. A 64 KB TSO frame from Linux takes about 19.
pub const MAX_DESCS: usize = 64;

const DESC_SIZE: u64 = 16;
/// Most bytes `Chain::read` copies out: a 64 KB frame (the largest GSO
/// frame) and its header.
pub const MAX_READ: u64 = 65536 + 12;

/// Which way the data goes, and so which WRITE flag every descriptor needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The guest's transmit queue: we only read its buffers.
    DeviceReads,
    /// The guest's receive queue: we only write its buffers.
    DeviceWrites,
}

/// How many used entries a burst writes for the chains it takes:
/// `prefetch_next` takes for writing the lines they go into and no more (a
/// line taken for writing and never written is one the guest's core must
/// take back before it writes there again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedAhead {
    /// One a chain.
    Each,
    /// One for the burst, in its first place (`add_used_in_order`: a
    /// transmit ring of a guest that negotiated IN_ORDER).
    One,
}

impl Direction {
    /// The WRITE flag every descriptor of a queue this way carries.
    #[inline(always)]
    pub(crate) fn write_flag(self) -> u16 {
        if self == Direction::DeviceWrites {
            VRING_DESC_F_WRITE
        } else {
            0
        }
    }
}

/// The negotiated ring features that change how a queue is walked and
/// notified (both off: the plain split ring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFeatures {
    /// VIRTIO_RING_F_INDIRECT_DESC: descriptors may point at tables.
    pub indirect: bool,
    /// VIRTIO_RING_F_EVENT_IDX: `used_event` and `avail_event` replace the
    /// rings' flags.
    pub event_idx: bool,
    /// VIRTIO_F_IN_ORDER: chains go back in the order they were taken.
    /// The rings do not enforce it; their users do (`CopyOnceRx`).
    pub in_order: bool,
}

impl RingFeatures {
    /// The ring features among a device's negotiated feature bits.
    pub fn from_bits(negotiated: u64) -> RingFeatures {
        RingFeatures { indirect: negotiated & VIRTIO_RING_F_INDIRECT_DESC != 0, event_idx: negotiated & VIRTIO_RING_F_EVENT_IDX != 0, in_order: negotiated & VIRTIO_F_IN_ORDER != 0 }
    }
}

/// One descriptor, copied out of guest memory.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    /// Entry `i` of the descriptor table `table`, in one load: the guest may
    /// rewrite it meanwhile, so every check is made on this copy.
    #[inline]
    fn load(mem: &GuestMemory, table: &Span, i: u16) -> Result<Desc, ChainError> {
        // With `?`, not `.map(Desc::split)`: that form cost the walk inlined
        // into delivery 30 instructions a frame (callgrind, vm2vm 64 B).
        let words = mem.load_words::<2>(table, i as usize * DESC_SIZE as usize).map_err(|_| ChainError::OutsideMemory)?;
        Ok(Desc::split(words))
    }

    /// A split ring's descriptor from its two little-endian words.
    #[inline(always)]
    fn split([addr, w]: [u64; 2]) -> Desc {
        Desc { addr, len: w as u32, flags: (w >> 32) as u16, next: (w >> 48) as u16 }
    }

    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// What `pop` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pop {
    /// Nothing available.
    Empty,
    /// A valid chain, now in the caller's `Chain`.
    Chain,
    /// A bad chain: consumed; return `head` with length 0 and count `err`.
    Bad { head: u16, err: ChainError },
}

/// Our side of one split virtqueue. Indices are free-running `Wrapping<u16>`
/// as in the spec; the ring slot is the index modulo the size. The rings are
/// translated once, against the memory the queue is made for.
#[derive(Clone, Debug)]
pub struct SplitQueue {
    size: u16,
    desc: Span,
    avail: Span,
    used: Span,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
    /// The last avail->idx read: entries up to it are known available
    /// without reading the index again.
    avail_seen: Wrapping<u16>,
    /// The avail index at which the chains offered were too few for a
    /// frame, and its bytes: until the index moves, they are not walked
    /// again for a frame as large.
    starved_at: Option<(Wrapping<u16>, u64)>,
    features: RingFeatures,
    /// The used index at the last EVENT_IDX interrupt check (Linux vhost's
    /// `signalled_used`), and whether it means anything: not before the
    /// first check, nor once the used index has gone all the way round
    /// since (either way the next check interrupts).
    signalled_used: Wrapping<u16>,
    signalled_valid: bool,
}

impl SplitQueue {
    /// A queue of `size` entries (a power of two up to 32768) whose rings are
    /// at the given guest addresses in `mem`, resuming at the indices
    /// rte_vhost reports (its vring base: where the last user left). Each
    /// ring must lie in one region of `mem` (a guest allocates it in one
    /// piece; one split over a region boundary is refused, not walked).
    /// No ring features: see `with_features`.
    pub fn new(size: u16, desc: Gpa, avail: Gpa, used: Gpa, indices: (u16, u16), mem: &GuestMemory) -> Result<SplitQueue, &'static str> {
        SplitQueue::with_features(size, desc, avail, used, indices, mem, RingFeatures::default())
    }

    /// `new` for a device that negotiated `features`. With EVENT_IDX each
    /// ring has two more bytes (used_event after the avail ring, avail_event
    /// after the used ring), and they must lie in guest memory too.
    pub fn with_features(
        size: u16,
        desc: Gpa,
        avail: Gpa,
        used: Gpa,
        (next_avail, next_used): (u16, u16),
        mem: &GuestMemory,
        features: RingFeatures,
    ) -> Result<SplitQueue, &'static str> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err("bad ring size");
        }
        // The spec's alignments (2.6): the index loads and stores on these
        // rings are atomic and must not straddle.
        if !desc.0.is_multiple_of(16) || !avail.0.is_multiple_of(2) || !used.0.is_multiple_of(4) {
            return Err("misaligned ring");
        }
        let n = size as u32;
        let event = if features.event_idx { 2 } else { 0 };
        let span = |gpa, len| mem.span(gpa, len).ok_or("ring outside guest memory");
        Ok(SplitQueue {
            size,
            desc: span(desc, n * DESC_SIZE as u32)?,
            avail: span(avail, 4 + 2 * n + event)?,
            used: span(used, 4 + 8 * n + event)?,
            next_avail: Wrapping(next_avail),
            next_used: Wrapping(next_used),
            avail_seen: Wrapping(next_avail),
            starved_at: None,
            features,
            signalled_used: Wrapping(next_used),
            signalled_valid: false,
        })
    }

    pub fn features(&self) -> RingFeatures {
        self.features
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Our indices, for `rte_vhost_set_vring_base` when the device stops.
    pub fn indices(&self) -> (u16, u16) {
        (self.next_avail.0, self.next_used.0)
    }

    /// Entries the guest has made available and we have not consumed.
    pub fn available(&mut self, mem: &GuestMemory) -> Result<u16, RingError> {
        // Acquire: the ring entries and descriptors the guest wrote before
        // bumping idx are visible once we see the new idx.
        let idx = mem.span_u16_acquire(&self.avail, 2)?;
        let pending = (Wrapping(idx) - self.next_avail).0;
        if pending > self.size {
            return Err(RingError::AvailJump { avail: idx, consumed: self.next_avail.0 });
        }
        self.avail_seen = Wrapping(idx);
        Ok(pending)
    }

    /// Chains the last avail->idx read showed and not yet popped.
    #[inline(always)]
    fn known(&self) -> usize {
        (self.avail_seen - self.next_avail).0 as usize
    }

    /// Takes the next available chain into `out`. avail->idx is read again
    /// only when the entries known from the last read are used up.
    pub fn pop(&mut self, mem: &GuestMemory, dir: Direction, out: &mut Chain) -> Result<Pop, RingError> {
        if self.next_avail == self.avail_seen && self.available(mem)? == 0 {
            return Ok(Pop::Empty);
        }
        let slot = (self.next_avail.0 & (self.size - 1)) as usize;
        let head = u16::from_le_bytes(mem.load(&self.avail, 4 + 2 * slot)?);
        self.next_avail += 1;
        // A chain of one descriptor, as nearly every one is: the checks
        // `pop_singles` makes, and no walk.
        if let Some(s) = mem.reader(&self.desc, 8).and_then(|table| self.single(mem, &table, head, dir)) {
            out.set_single(head, s);
            return Ok(Pop::Chain);
        }
        Ok(match self.walk(mem, dir, head, out) {
            Ok(()) => Pop::Chain,
            Err(err) => Pop::Bad { head, err },
        })
    }

    /// Takes the run of one-buffer chains at the front of the ring (nearly
    /// every chain a guest offers), up to `out.len()`, into `out`; returns
    /// how many. It stops before the first other chain, or any error, and
    /// leaves it to `pop`: the chains taken are the last popped, in a row,
    /// so `unpop` can give them back. One call for many chains, none
    /// walked: `--bench vm2vm` 64 B, a frame's two pops were 320 of its
    /// 768 instructions.
    pub fn pop_singles(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain]) -> usize {
        // The index is read again when the entries known are too few.
        if self.known() < out.len() && self.available(mem).is_err() {
            return 0;
        }
        // The rings checked once for the run; a table not aligned as the
        // spec asks is left to `pop`.
        let (Some(avail), Some(table)) = (mem.reader(&self.avail, 2), mem.reader(&self.desc, 8)) else { return 0 };
        let known = self.known().min(out.len());
        let mask = self.size as usize - 1;
        let mut n = 0;
        while n < known {
            let slot = (self.next_avail.0 as usize + n) & mask;
            let Some(head) = avail.u16_at(4 + 2 * slot) else { break };
            let Some(s) = self.single(mem, &table, head, dir) else { break };
            out[n].set_single(head, s);
            n += 1;
        }
        self.next_avail += n as u16;
        n
    }

    /// The buffer of chain `head` if it is one descriptor that passes every
    /// check the walk would make of it: a head in the table, flags exactly
    /// the queue's direction (no NEXT, no INDIRECT), not empty, in one
    /// region. None leaves it to the walk.
    #[inline(always)]
    fn single(&self, mem: &GuestMemory, table: &Reader, head: u16, dir: Direction) -> Option<Span> {
        if head >= self.size {
            return None;
        }
        let d = table.words_at::<2>(head as usize * DESC_SIZE as usize).map(Desc::split)?;
        if d.flags != dir.write_flag() || d.len == 0 {
            return None;
        }
        mem.span(Gpa(d.addr), d.len)
    }

    /// Always inlined into `pop`, with `Chain::take` (see `Chain::push`).
    #[inline(always)]
    fn walk(&self, mem: &GuestMemory, dir: Direction, head: u16, out: &mut Chain) -> Result<(), ChainError> {
        out.clear(head);
        if head >= self.size {
            return Err(ChainError::HeadOutOfRange);
        }
        let mut idx = head;
        // At most `size` descriptors: a longer walk has met a loop.
        for _ in 0..self.size {
            let d = Desc::load(mem, &self.desc, idx)?;
            if d.has(VRING_DESC_F_INDIRECT) {
                return self.walk_indirect(mem, dir, &d, out);
            }
            out.take(mem, dir, &d)?;
            if !d.has(VRING_DESC_F_NEXT) {
                return Ok(());
            }
            if d.next >= self.size {
                return Err(ChainError::NextOutOfRange);
            }
            idx = d.next;
        }
        Err(ChainError::TooLong)
    }

    /// The rest of a chain from the indirect table `d` points at. `d` ends
    /// its chain: a driver may not set NEXT with INDIRECT (2.6.5.3.1), so
    /// one that does is refused rather than followed either way. The table
    /// must lie in one region: it is at most `MAX_DESCS` entries (1 KB) that
    /// the driver allocates in one piece, so one split across regions is
    /// refused as outside memory rather than walked piecewise.
    fn walk_indirect(&self, mem: &GuestMemory, dir: Direction, d: &Desc, out: &mut Chain) -> Result<(), ChainError> {
        if !self.features.indirect {
            return Err(ChainError::Indirect);
        }
        if d.has(VRING_DESC_F_NEXT) || d.len == 0 || !(d.len as u64).is_multiple_of(DESC_SIZE) {
            return Err(ChainError::BadIndirect);
        }
        let entries = d.len as u64 / DESC_SIZE;
        if entries > MAX_DESCS as u64 {
            return Err(ChainError::TooLong);
        }
        let table = mem.span(Gpa(d.addr), d.len).ok_or(ChainError::OutsideMemory)?;
        let entries = entries as u16;
        let mut idx = 0;
        // At most `entries` descriptors: a longer walk has met a loop.
        for _ in 0..entries {
            let t = Desc::load(mem, &table, idx)?;
            if t.has(VRING_DESC_F_INDIRECT) {
                return Err(ChainError::BadIndirect);
            }
            out.take(mem, dir, &t)?;
            if !t.has(VRING_DESC_F_NEXT) {
                return Ok(());
            }
            if t.next >= entries {
                return Err(ChainError::BadIndirect);
            }
            idx = t.next;
        }
        Err(ChainError::TooLong)
    }

    /// Gives back `chains`, the last popped and not yet used: a packet
    /// that found too few receive buffers leaves the ring as it was.
    pub fn unpop(&mut self, chains: &[Chain]) {
        self.next_avail -= chains.len() as u16;
    }

    /// Records that the chains offered could not take `need` bytes (see
    /// `starved`).
    pub fn mark_starved(&mut self, need: u64) {
        self.starved_at = Some((self.avail_seen, need));
    }

    /// Whether `need` bytes cannot fit: the chains on offer were too few for
    /// as many bytes or fewer, and the guest has offered none since. One
    /// index load, where walking the same chains again could cost
    /// `MAX_DESCS` loads each, per frame, for nothing.
    pub fn starved(&mut self, mem: &GuestMemory, need: u64) -> Result<bool, RingError> {
        let Some((at, failed)) = self.starved_at else { return Ok(false) };
        self.available(mem)?;
        if self.avail_seen != at {
            self.starved_at = None;
            return Ok(false);
        }
        Ok(need >= failed)
    }

    /// Writes a used entry (not yet visible to the guest: see `publish`).
    pub fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<(), RingError> {
        self.add_used_all(mem, std::iter::once((head, len)))
    }

    /// `add_used` for each of `entries` (head, bytes written), in order, the
    /// used index kept in a register: reloaded after each entry's
    /// store (which may alias it, for all the compiler knows), a wider load
    /// over the narrower store of the last increment could not be forwarded
    /// from it and waited for every older store to drain (perf, vswitch-bench
    /// 2vm 64 B: a third of `GuestBurst::commit`'s samples).
    pub fn add_used_all(&mut self, mem: &GuestMemory, entries: impl Iterator<Item = (u16, u32)>) -> Result<(), RingError> {
        let (mask, mut next, signalled) = (self.size - 1, self.next_used, self.signalled_used);
        let mut wrapped = false;
        let mut stored = Ok(());
        for (head, len) in entries {
            if let Err(e) = mem.store(&self.used, 4 + 8 * (next.0 & mask) as usize, (head as u64 | (len as u64) << 32).to_le_bytes()) {
                stored = Err(e.into());
                break;
            }
            next += 1;
            wrapped |= next == signalled;
        }
        self.next_used = next;
        // Gone all the way round since the last check: `signalled_used`
        // would now look like nothing was published, and the guest would
        // wait for an interrupt that never comes (as Linux vhost guards).
        if wrapped {
            self.signalled_valid = false;
        }
        stored
    }

    /// Chains of a guest that negotiated IN_ORDER, taken in ring order and
    /// going back with nothing written (a transmit ring's): one used entry,
    /// the last chain's, in the batch's first slot, and the used index past
    /// them all, as 2.7.9 lets a device return a batch. The guest reads one
    /// entry where it would read `heads.len()` (DPDK's vhost does as much
    /// for packed rings).
    pub fn add_used_in_order(&mut self, mem: &GuestMemory, heads: &[u16]) -> Result<(), RingError> {
        let Some(&last) = heads.last() else { return Ok(()) };
        let n = heads.len() as u16;
        mem.store(&self.used, 4 + 8 * (self.next_used.0 & (self.size - 1)) as usize, (last as u64).to_le_bytes())?;
        // As in `add_used_all`: passing `signalled_used` voids it.
        if (self.signalled_used - self.next_used - Wrapping(1)).0 < n {
            self.signalled_valid = false;
        }
        self.next_used += n;
        Ok(())
    }

    /// Makes every used entry added so far visible (release store of
    /// used->idx: the entries and the data they describe come first).
    pub fn publish(&self, mem: &GuestMemory) -> Result<(), RingError> {
        mem.span_u16_release(&self.used, 2, self.next_used.0)?;
        Ok(())
    }

    /// Whether to interrupt the guest for what has been published (call it
    /// after `publish`). With EVENT_IDX: whether the used index went past
    /// the guest's `used_event` since the previous call (the first call
    /// says yes: an interrupt too many is harmless, one too few can stall
    /// the guest's queue for good). Without: the NO_INTERRUPT flag.
    pub fn needs_interrupt(&mut self, mem: &GuestMemory) -> bool {
        if !self.features.event_idx {
            return self.guest_wants_interrupt(mem);
        }
        // Orders our used->idx store before the used_event load; without it
        // the guest could move used_event after our check and sleep on a
        // ring we just filled.
        full_fence();
        let new = self.next_used;
        let old = std::mem::replace(&mut self.signalled_used, new);
        let valid = std::mem::replace(&mut self.signalled_valid, true);
        let Ok(event) = mem.span_u16_acquire(&self.avail, 4 + 2 * self.size as usize) else {
            return true;
        };
        !valid || vring_need_event(Wrapping(event), new, old)
    }

    /// Whether the guest's NO_INTERRUPT flag allows an interrupt: the rule
    /// without EVENT_IDX (`needs_interrupt` applies it then, and callers
    /// should use that). The full fence orders our used->idx store before
    /// the flags load; without it the guest could enable interrupts after
    /// our check and sleep on a ring we just filled.
    pub fn guest_wants_interrupt(&self, mem: &GuestMemory) -> bool {
        full_fence();
        mem.load(&self.avail, 0).map(|f| u16::from_le_bytes(f) & VRING_AVAIL_F_NO_INTERRUPT == 0).unwrap_or(false)
    }

    /// Asks the guest not to kick us: we poll. A driver with EVENT_IDX
    /// ignores this flag and kicks when its avail index crosses our
    /// `avail_event` instead; we never move that, so such a kick comes at
    /// most once per 65536 entries, and writing `avail_event` to put it off
    /// would cost a store per burst for nothing.
    pub fn suppress_kicks(&self, mem: &GuestMemory) -> Result<(), RingError> {
        mem.store(&self.used, 0, VRING_USED_F_NO_NOTIFY.to_le_bytes())?;
        Ok(())
    }

    /// Asks the guest to kick at its next entry (our thread is going to
    /// sleep) and says whether the ring is empty. After the fence, an
    /// entry the guest adds shows in the index read here or comes with a
    /// kick: its side stores the index, then reads our flag or
    /// `avail_event` (spec 2.7.10). `suppress_kicks` undoes it.
    pub fn ask_for_kicks(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        if self.features.event_idx {
            mem.span_u16_release(&self.used, 4 + 8 * self.size as usize, self.next_avail.0)?;
        } else {
            mem.store(&self.used, 0, 0u16.to_le_bytes())?;
        }
        full_fence();
        Ok(self.available(mem)? == 0)
    }
}

/// Whether the used index, going from `old` to `new`, passed the guest's
/// `event`: `event` in `[old, new)`, modulo 2^16 (the spec's and Linux's
/// vring_need_event).
#[inline]
fn vring_need_event(event: Wrapping<u16>, new: Wrapping<u16>, old: Wrapping<u16>) -> bool {
    (new - event - Wrapping(1)).0 < (new - old).0
}

mod ahead;
mod chain;
mod errors;
mod packed;
mod queue;

pub use chain::{copy_chain, pieces, Chain, Cursor};
pub use errors::{ChainError, Refused, RingError};
pub use packed::{KeptPosition, PackedQueue, PublishRecord, RingSession, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTIO_F_RING_PACKED, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED};
pub use queue::{RingOps, Virtqueue};

#[cfg(test)]
pub(crate) mod test_guest;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod indirect_tests;
#[cfg(test)]
mod event_idx_tests;
#[cfg(test)]
pub(crate) mod test_packed;
#[cfg(test)]
mod packed_tests;
#[cfg(test)]
mod packed_event_tests;
#[cfg(test)]
mod packed_hostile_tests;
#[cfg(test)]
mod packed_property_tests;
#[cfg(test)]
mod batch_tests;
