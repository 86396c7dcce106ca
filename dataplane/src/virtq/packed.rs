//! A packed virtqueue (VIRTIO_F_RING_PACKED, VIRTIO 1.1, 2.7) walked by the
//! switch itself: one ring of descriptors that the guest makes available
//! and we overwrite as used, plus two 4-byte event suppression areas.
//!
//! A position is a slot and a wrap counter (both sides start at slot 0,
//! counter 1, and flip the counter each time they pass the end). A slot is
//! available when its AVAIL flag equals our avail wrap counter and its USED
//! flag does not; we mark one used by setting both to our used counter.
//!
//! The guest is not trusted, with the split walker's rules (see
//! `virtq.rs`): every descriptor read once into a local copy, every buffer
//! checked against guest memory, at most `MAX_DESCS` buffer descriptors a
//! chain, zero-length buffers and wrong WRITE flags refused, indirect
//! tables only when negotiated, in one region, a multiple of 16 bytes and
//! at most `MAX_DESCS` entries. Packed rings add their own:
//! - A chain ends at the first descriptor without NEXT, which holds its
//!   buffer id (2.7.6). A refused chain is still followed to its end: its
//!   slots are consumed and its id goes back with length 0.
//! - Every descriptor of a chain must be marked available, not just the
//!   head (2.7.6), and a chain may not be longer than the ring. A chain
//!   that breaks either rule has no end we can trust, so nothing after it
//!   can be found: the queue is broken (`RingError::BrokenChain`).
//! - An id must be below the ring size and not already in flight; such a
//!   chain is refused as `HeadOutOfRange` (the split ring's reason for a
//!   head it cannot return). An id beyond the ring is never written back
//!   (the guest would index its own table with it): its slots are lost to
//!   the guest that made it. An id offered twice goes back once, with
//!   length 0, when the refused chain is returned.
//! - An INDIRECT descriptor must be a whole chain on its own (2.7.7: no
//!   NEXT, none before it). In a table only WRITE counts; AVAIL, USED and
//!   NEXT are ignored (DPDK's virtio PMD sets them), INDIRECT is refused
//!   (nesting), as in split rings. The table is walked in order, every
//!   entry a buffer.
//!
//! Completion may be out of order: `add_used` takes the next used slot for
//! whichever id comes, and moves on by the slots that id's chain took (the
//! guest keeps the same count per id). `publish` writes the batch, the
//! first used descriptor's flags last with release ordering, so the guest
//! never sees part of a batch (2.7.9: a multi-buffer frame appears at
//! once). Until then the ring is untouched, and a kept position keeps the
//! batch beside it, for the next switch to finish if this one dies inside
//! `publish` (see `resume`).
//!
//! Events: the driver area tells us when to interrupt (ENABLE, DISABLE, or
//! with EVENT_IDX a DESC position); we write DISABLE into the device area
//! once (`suppress_kicks`), since we poll.
use pmd_bridge::guest_mem::{GuestMemory, Gpa, OutOfBounds, Reader, Span};

mod ahead;
mod batch;
mod in_flight;
mod notify;
mod resume;
use batch::{store_batch, BatchRoom};
use in_flight::InFlight;
pub use resume::{KeptPosition, PublishRecord, RingSession};

use super::{Chain, ChainError, Desc, Direction, Pop, RingError, RingFeatures, DESC_SIZE, MAX_DESCS, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// VIRTIO_F_RING_PACKED, as a feature bit.
pub const VIRTIO_F_RING_PACKED: u64 = 1 << 34;
pub const VRING_PACKED_DESC_F_AVAIL: u16 = 1 << 7;
pub const VRING_PACKED_DESC_F_USED: u16 = 1 << 15;
/// Event suppression flags (driver and device areas).
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// Most descriptors `available` looks at: enough for a burst, and their
/// loads are independent, so they overlap.
const AVAIL_SCAN: u16 = 64;
/// Most used descriptors a batch keeps back until `publish` (a burst's
/// frames in a few buffers each).
const MAX_BATCH: usize = 512;

/// A slot and the wrap counter that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    slot: u16,
    wrap: bool,
}

impl Pos {
    /// From rte_vhost's encoding: the slot in bits 0-14, the counter in 15.
    fn from_index(i: u16) -> Pos {
        Pos { slot: i & 0x7fff, wrap: i & 0x8000 != 0 }
    }

    fn index(self) -> u16 {
        self.slot | (self.wrap as u16) << 15
    }

    /// `n` slots on (at most the ring size).
    fn advance(&mut self, n: u16, size: u16) {
        let s = self.slot as u32 + n as u32;
        if s >= size as u32 {
            self.slot = (s - size as u32) as u16;
            self.wrap = !self.wrap;
        } else {
            self.slot = s as u16;
        }
    }

    /// `n` slots back (at most the ring size).
    fn back(&mut self, n: u16, size: u16) {
        if n > self.slot {
            self.slot = self.slot + size - n;
            self.wrap = !self.wrap;
        } else {
            self.slot -= n;
        }
    }

    /// Where the position is in the 2 × size cycle over which positions
    /// (and flags) repeat.
    fn in_cycle(self, size: u16) -> u32 {
        self.slot as u32 + if self.wrap { 0 } else { size as u32 }
    }

    /// The slots from `from` on to this position, counted round that
    /// cycle (below 2 × size).
    fn since(self, from: Pos, size: u16) -> u32 {
        let cycle = 2 * size as u32;
        (self.in_cycle(size) + cycle - from.in_cycle(size)) % cycle
    }
}

/// Where the flags of the descriptor in `slot` are in the ring.
#[inline]
fn flags_at(slot: u16) -> usize {
    slot as usize * DESC_SIZE as usize + 14
}

/// Whether `flags` make a slot available in the lap whose counter is `wrap`.
#[inline]
fn is_avail(flags: u16, wrap: bool) -> bool {
    // AVAIL equal to the counter and USED not: one mask and one compare.
    let want = if wrap { VRING_PACKED_DESC_F_AVAIL } else { VRING_PACKED_DESC_F_USED };
    flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) == want
}

/// A packed descriptor (addr, len, id, flags), copied out in one load, as
/// a `Desc` (its `next` unused) and its id. Always inlined: returned
/// through memory, the result was read back before earlier stores into
/// guest memory had drained, and waited for them.
#[inline(always)]
fn load(mem: &GuestMemory, table: &Span, i: u16) -> Result<(Desc, u16), OutOfBounds> {
    let words = mem.load_words::<2>(table, i as usize * DESC_SIZE as usize)?;
    Ok(packed_desc(words))
}

/// A packed descriptor and its id from its two little-endian words.
#[inline(always)]
fn packed_desc([addr, w]: [u64; 2]) -> (Desc, u16) {
    (Desc { addr, len: w as u32, flags: (w >> 48) as u16, next: 0 }, (w >> 32) as u16)
}

/// Writes bytes 8..16 of a used descriptor past the batch's room at once
/// (cold, out of line: inlined, its dirty logging kept the batch's loop
/// short of registers).
#[cold]
#[inline(never)]
fn store_unbatched(mem: &GuestMemory, ring: &Span, slot: u16, e: u64) -> Result<(), OutOfBounds> {
    mem.store(ring, slot as usize * DESC_SIZE as usize + 8, e.to_le_bytes())
}

/// What walking one chain found: the slots it took, its id, and the first
/// reason to refuse it.
struct Walked {
    slots: u16,
    id: u16,
    err: Option<ChainError>,
}

/// Our side of one packed virtqueue. The ring and both event areas are
/// translated once, against the memory the queue is made for.
#[derive(Clone, Debug)]
pub struct PackedQueue {
    size: u16,
    ring: Span,
    /// Driver event suppression: the guest's wishes about interrupts.
    driver: Span,
    /// Device event suppression: ours about kicks.
    device: Span,
    features: RingFeatures,
    next_avail: Pos,
    next_used: Pos,
    /// How many slots from `next_avail` on were seen available (by an
    /// acquire load of their flags): `pop` need not look again.
    seen: u16,
    /// Where the chains on offer were last found to end: the slot `pop`
    /// found empty, or the end of the chains `unpop` gave back (for
    /// `mark_starved`).
    reached: Pos,
    /// The used position at the last `publish`: where the batch starts.
    published: Pos,
    /// The batch's used descriptors, kept until `publish`: at most
    /// `MAX_BATCH` (more are written at once, still unseen behind the
    /// first). In the kept position's words if there is one.
    batch: BatchRoom,
    batch_n: usize,
    /// Ring slots the chain in flight under each id took. Also how far
    /// `unpop` moves back for a chain given back.
    in_flight: InFlight,
    /// Where the chains on offer ran out for a frame, and its bytes (see
    /// `starved`).
    starved_at: Option<(Pos, u64)>,
    /// EVENT_IDX: the used position at the last interrupt check (None
    /// before the first), and slots used since, saturating.
    signalled: Option<Pos>,
    since: u32,
}

impl PackedQueue {
    /// A queue of `size` entries (up to 32768, any number: packed rings need
    /// no power of two) whose descriptor ring and driver and device areas
    /// are at the given guest addresses in `mem`, resuming at the positions
    /// rte_vhost reports (slot | wrap << 15, avail then used). Each part
    /// must lie in one region of `mem`.
    pub fn new(size: u16, desc: Gpa, driver: Gpa, device: Gpa, (avail, used): (u16, u16), mem: &GuestMemory, features: RingFeatures) -> Result<PackedQueue, &'static str> {
        if size == 0 || size > 32768 {
            return Err("bad ring size");
        }
        // 2.7.10's alignments: the flags and event areas are loaded and
        // stored atomically and must not straddle.
        if !desc.0.is_multiple_of(16) || !driver.0.is_multiple_of(4) || !device.0.is_multiple_of(4) {
            return Err("misaligned ring");
        }
        let (next_avail, next_used) = (Pos::from_index(avail), Pos::from_index(used));
        if next_avail.slot >= size || next_used.slot >= size {
            return Err("ring position beyond the ring");
        }
        let span = |gpa, len| mem.span(gpa, len).ok_or("ring outside guest memory");
        Ok(PackedQueue {
            size,
            ring: span(desc, size as u32 * DESC_SIZE as u32)?,
            driver: span(driver, 4)?,
            device: span(device, 4)?,
            features,
            next_avail,
            next_used,
            seen: 0,
            reached: next_avail,
            published: next_used,
            batch: BatchRoom::heap(size),
            batch_n: 0,
            in_flight: InFlight::new(size),
            starved_at: None,
            signalled: None,
            since: 0,
        })
    }

    pub fn features(&self) -> RingFeatures {
        self.features
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Our positions (slot | wrap << 15: avail, used), for
    /// `rte_vhost_set_vring_base` when the device stops.
    pub fn indices(&self) -> (u16, u16) {
        (self.next_avail.index(), self.next_used.index())
    }

    /// How many descriptors in a row, from the next one on, the guest has
    /// made available, looking at `AVAIL_SCAN` at most: more than 0 if a
    /// chain can be popped, and no fewer than the chains that can (a chain
    /// may take several). Slots seen before are not looked at again.
    pub fn available(&mut self, mem: &GuestMemory) -> Result<u16, RingError> {
        let limit = self.size.min(AVAIL_SCAN);
        let (mut at, mut seen) = (self.next_avail, self.seen);
        at.advance(seen.min(limit), self.size);
        // The ring checked once for the scan, the count kept in a register.
        let outside = RingError::Memory { gpa: self.ring.gpa().0 as u32 };
        let ring = mem.reader(&self.ring, 2).ok_or(outside)?;
        while seen < limit {
            // The slots up to the lap's end, the wrap not checked at each
            // and the range once.
            let run = (limit - seen).min(self.size - at.slot);
            let wrap = at.wrap;
            let k = ring.u16_acquire_run(flags_at(at.slot), DESC_SIZE as usize, run as usize, |f| is_avail(f, wrap)).ok_or(outside)? as u16;
            seen += k;
            at.advance(k, self.size);
            if k < run {
                break;
            }
        }
        self.seen = seen;
        Ok(seen.min(limit))
    }

    /// Takes the next available chain into `out` (its `head` is the buffer
    /// id).
    pub fn pop(&mut self, mem: &GuestMemory, dir: Direction, out: &mut Chain) -> Result<Pop, RingError> {
        let head = self.next_avail;
        // A chain of one descriptor, as nearly every one is: the checks
        // `pop_singles` makes, its flags among them (with acquire), and no
        // walk. First, so the head's flags are not loaded twice.
        if let Some((id, s)) = mem.reader(&self.ring, 8).and_then(|ring| self.single(mem, &ring, head, dir)) {
            out.set_single(id, s);
            self.in_flight.set(id, 1);
            self.consume(1);
            return Ok(Pop::Chain);
        }
        // Acquire: the descriptors the guest wrote before the head's flags
        // are visible once we see them (it makes the head available last).
        if self.seen == 0 && !is_avail(mem.span_u16_acquire(&self.ring, flags_at(head.slot))?, head.wrap) {
            self.reached = head;
            return Ok(Pop::Empty);
        }
        let w = self.walk(mem, dir, head, out)?;
        let err = if self.in_flight.is_free(w.id) {
            self.in_flight.set(w.id, w.slots);
            w.err
        } else {
            Some(ChainError::HeadOutOfRange)
        };
        self.consume(w.slots);
        out.head = w.id;
        Ok(match err {
            None => Pop::Chain,
            Some(err) => Pop::Bad { head: w.id, err },
        })
    }

    /// Moves past a chain of `slots` slots.
    #[inline(always)]
    fn consume(&mut self, slots: u16) {
        self.next_avail.advance(slots, self.size);
        self.seen = self.seen.saturating_sub(slots);
    }

    /// The run of one-buffer chains at the front of the ring, as
    /// `SplitQueue::pop_singles` takes it: each slot's flags are read with
    /// its descriptor, so no look at the ring goes first (`available`, a
    /// pass over the same lines, cost 10 instructions a frame of `--bench
    /// vm2vm` 60 B).
    pub fn pop_singles(&mut self, mem: &GuestMemory, dir: Direction, out: &mut [Chain]) -> usize {
        // The ring checked once for the run; one not aligned as the spec
        // asks is left to `pop`.
        let Some(ring) = mem.reader(&self.ring, 8) else { return 0 };
        // The position kept in registers for the run, as `consume` would
        // move it a chain at a time.
        let mut at = self.next_avail;
        let mut n = 0;
        while n < out.len() {
            // The slots up to the lap's end, the wrap not checked at each.
            let run = (out.len() - n).min((self.size - at.slot) as usize);
            let mut k = 0;
            while let Some(c) = out[n..n + run].get_mut(k) {
                let Some((id, s)) = self.single(mem, &ring, Pos { slot: at.slot + k as u16, wrap: at.wrap }, dir) else { break };
                c.set_single(id, s);
                self.in_flight.set(id, 1);
                k += 1;
            }
            at.advance(k as u16, self.size);
            n += k;
            if k < run {
                break;
            }
        }
        self.next_avail = at;
        self.seen = self.seen.saturating_sub(n as u16);
        n
    }

    /// The id and buffer of the chain at `at` if it is available there and
    /// is one descriptor whose flags, past AVAIL and USED, are exactly the
    /// queue's direction (WRITE for `DeviceWrites`), not empty, in one
    /// region, under an id not in flight: every check the walk would make
    /// of it. None leaves it to `pop` and its walk.
    #[inline(always)]
    fn single(&self, mem: &GuestMemory, ring: &Reader, at: Pos, dir: Direction) -> Option<(u16, Span)> {
        // Its flags with acquire, before its address: the guest stores
        // them last, after the rest.
        let (d, id) = packed_desc(ring.desc_acquire_at(at.slot as usize * DESC_SIZE as usize)?);
        let avail = if at.wrap { VRING_PACKED_DESC_F_AVAIL } else { VRING_PACKED_DESC_F_USED };
        // Available and of one buffer in the direction asked: one compare.
        if d.flags != avail | dir.write_flag() || d.len == 0 || !self.in_flight.is_free(id) {
            return None;
        }
        Some((id, mem.span(Gpa(d.addr), d.len)?))
    }

    /// Follows the chain at `head` (known available) to its end, taking
    /// its buffers into `out` until one is refused.
    fn walk(&self, mem: &GuestMemory, dir: Direction, head: Pos, out: &mut Chain) -> Result<Walked, RingError> {
        out.clear(0);
        let mut at = head;
        let mut err = None;
        let mut n = 0;
        while n < self.size {
            n += 1;
            let (d, id) = load(mem, &self.ring, at.slot)?;
            // The head's flags were read above; the rest must say
            // available too (2.7.6), or the chain has no end we can trust.
            if n > 1 && !is_avail(d.flags, at.wrap) {
                return Err(RingError::BrokenChain { slot: at.slot });
            }
            if err.is_none() {
                err = self.take(mem, dir, &d, n, out).err();
            }
            if !d.has(VRING_DESC_F_NEXT) {
                return Ok(Walked { slots: n, id, err });
            }
            at.advance(1, self.size);
        }
        // Round the whole ring and on: a chain longer than the ring.
        Err(RingError::BrokenChain { slot: head.slot })
    }

    /// Adds descriptor `d`, the `n`th of its chain: a buffer, or the whole
    /// chain as an indirect table.
    fn take(&self, mem: &GuestMemory, dir: Direction, d: &Desc, n: u16, out: &mut Chain) -> Result<(), ChainError> {
        if !d.has(VRING_DESC_F_INDIRECT) {
            return out.take(mem, dir, d);
        }
        if !self.features.indirect {
            return Err(ChainError::Indirect);
        }
        if n > 1 || d.has(VRING_DESC_F_NEXT) || d.len == 0 || !(d.len as u64).is_multiple_of(DESC_SIZE) {
            return Err(ChainError::BadIndirect);
        }
        let entries = d.len as u64 / DESC_SIZE;
        if entries > MAX_DESCS as u64 {
            return Err(ChainError::TooLong);
        }
        let table = mem.span(Gpa(d.addr), d.len).ok_or(ChainError::OutsideMemory)?;
        for i in 0..entries as u16 {
            let (t, _) = load(mem, &table, i).map_err(|_| ChainError::OutsideMemory)?;
            if t.has(VRING_DESC_F_INDIRECT) {
                return Err(ChainError::BadIndirect);
            }
            // DPDK's virtio PMD leaves WRITE set on the header entry of a
            // transmit table (it presets every entry so); a buffer the
            // switch only reads is safe to read whatever it says, so on
            // the transmit side the flag is not held against the guest.
            let flags = if dir == Direction::DeviceReads { 0 } else { t.flags & VRING_DESC_F_WRITE };
            out.take(mem, dir, &Desc { flags, ..t })?;
        }
        Ok(())
    }

    /// Gives back `chains`, the last popped and not yet used, each under
    /// its id (a chain refused as `HeadOutOfRange` is not, and cannot go
    /// back): a packet that found too few receive buffers leaves the ring
    /// as it was. Each moves the position back by the slots its id holds,
    /// so no pop records anything for this.
    pub fn unpop(&mut self, chains: &[Chain]) {
        if !chains.is_empty() {
            self.reached = self.next_avail;
        }
        for c in chains {
            let slots = self.in_flight.take(c.head);
            debug_assert!(slots > 0, "unpop of a chain not in flight");
            self.next_avail.back(slots, self.size);
            self.seen = self.seen.saturating_add(slots);
        }
    }

    /// Records that the chains offered could not take `need` bytes (see
    /// `starved`).
    pub fn mark_starved(&mut self, need: u64) {
        self.starved_at = Some((self.reached, need));
    }

    /// Whether `need` bytes cannot fit: the chains on offer were too few for
    /// as many bytes or fewer, and the slot where they ran out is still not
    /// available. One flags load. (When they ran out for a cap rather than
    /// at an empty slot, that slot may be available already: then the
    /// chains are walked again, as without this.)
    pub fn starved(&mut self, mem: &GuestMemory, need: u64) -> Result<bool, RingError> {
        let Some((at, failed)) = self.starved_at else { return Ok(false) };
        if is_avail(mem.span_u16_acquire(&self.ring, flags_at(at.slot))?, at.wrap) {
            self.starved_at = None;
            return Ok(false);
        }
        Ok(need >= failed)
    }

    /// Adds the next used descriptor, for the chain in flight under `id`
    /// (not yet visible to the guest: see `publish`). An id with nothing
    /// of ours in flight (beyond the ring, already returned, or never
    /// popped) adds nothing.
    pub fn add_used(&mut self, mem: &GuestMemory, id: u16, len: u32) -> Result<(), RingError> {
        self.add_used_all(mem, std::iter::once((id, len)))
    }

    /// `add_used` for each of `entries` (id, bytes written), in order, the
    /// used position and the batch's length kept in registers meanwhile
    /// (`--bench vm2vm` 60 B: 38 instructions a frame fewer than an
    /// `add_used` a chain).
    pub fn add_used_all(&mut self, mem: &GuestMemory, entries: impl Iterator<Item = (u16, u32)>) -> Result<(), RingError> {
        // The size, the tables and the position in locals: kept in the
        // fields, they were reloaded after every store into the batch
        // (which may alias them, for all the compiler knows).
        let (size, mut at, mut moved) = (self.size, self.next_used, 0u32);
        let (in_flight, batch) = (&mut self.in_flight, self.batch.entries());
        let mut room = batch.get(self.batch_n..).unwrap_or_default().iter();
        let mut stored = Ok(());
        for (id, len) in entries {
            let slots = in_flight.take(id);
            if slots == 0 {
                continue;
            }
            // Both flags equal to our counter: used. WRITE says bytes were
            // written (2.7.3).
            let flags = (at.wrap as u16 * (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) | ((len > 0) as u16 * VRING_DESC_F_WRITE);
            // Bytes 8..16 of the descriptor: len, id, flags.
            let e = len as u64 | (id as u64) << 32 | (flags as u64) << 48;
            if let Some(entry) = room.next() {
                batch::keep(entry, at.slot, e);
            } else if let Err(e) = store_unbatched(mem, &self.ring, at.slot, e) {
                stored = Err(e.into());
                break;
            }
            at.advance(slots, size);
            moved += slots as u32;
        }
        (self.next_used, self.batch_n) = (at, batch.len() - room.len());
        self.since = self.since.saturating_add(moved);
        stored
    }

    /// `SplitQueue::add_used_in_order`: one used descriptor, the last
    /// chain's, in the batch's first slot, the used position past every
    /// slot taken (`heads` are every chain taken since the last return).
    pub fn add_used_in_order(&mut self, mem: &GuestMemory, heads: &[u16]) -> Result<(), RingError> {
        // The last id that can be in flight names the batch; one that
        // cannot (a chain refused for it) is left out, as `add_used` would.
        let Some(&last) = heads.iter().rev().find(|&&id| id < self.size) else { return Ok(()) };
        self.in_flight.take_all();
        // The slots from the used position to the avail one, where a sum
        // over each chain's slots was: poll_ab, 2vm packed 64 B, 0.993,
        // 0.995, 0.996. Charged to the last chain (below 2 × size, so in
        // u16): `add_used_all` takes it back whole.
        self.in_flight.set(last, self.next_avail.since(self.next_used, self.size) as u16);
        self.add_used_all(mem, std::iter::once((last, 0)))
    }

    /// Makes every used descriptor added so far visible: the batch is
    /// written, its first descriptor's flags last, with release ordering
    /// (the rest, and the data they describe, come first). Until then the
    /// ring is untouched, so a switch that dies before can take the
    /// batch's chains again (see `resume`).
    pub fn publish(&mut self, mem: &GuestMemory) -> Result<(), RingError> {
        if self.batch_n == 0 {
            return Ok(());
        }
        self.keep_record();
        // The ring checked once for the batch.
        let outside = RingError::Memory { gpa: self.ring.gpa().0 as u32 };
        let ring = mem.writer(&self.ring).ok_or(outside)?;
        store_batch(&ring, &self.batch.entries()[..self.batch_n]).then_some(()).ok_or(outside)?;
        self.batch_n = 0;
        self.published = self.next_used;
        Ok(())
    }
}
