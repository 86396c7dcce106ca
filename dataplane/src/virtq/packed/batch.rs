//! Where a packed ring's used descriptors wait for `publish`.
//!
//! A ring whose position is kept (`resume`) holds its batch in the kept
//! words themselves, written there as `add_used` adds each descriptor: the
//! batch is already beside the record when `publish` writes the record,
//! for a next switch to finish (`resume_at`). Copying it there at publish
//! cost about 0.9% of the packed ring's cycles at 64 B.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pmd_bridge::guest_mem::Writer;

use super::{flags_at, KeptPosition, DESC_SIZE, MAX_BATCH};

/// A used descriptor waiting: its slot, then its bytes 8..16 (len, id,
/// flags) as a little-endian word.
pub(super) type Entry = [AtomicU64; 2];

/// Room for a batch: on the heap for a ring without a kept position.
#[derive(Debug)]
pub(super) enum BatchRoom {
    Heap(Box<[Entry]>),
    Kept(KeptPosition),
}

impl BatchRoom {
    /// Room for the batches of a ring of `size` slots: a used descriptor a
    /// chain, and never more chains in flight than ids below the size.
    pub(super) fn heap(size: u16) -> BatchRoom {
        BatchRoom::Heap((0..(size as usize).min(MAX_BATCH)).map(|_| Default::default()).collect())
    }

    pub(super) fn entries(&self) -> &[Entry] {
        match self {
            BatchRoom::Heap(w) => w,
            BatchRoom::Kept(k) => k.batch(),
        }
    }
}

impl Clone for BatchRoom {
    fn clone(&self) -> BatchRoom {
        match self {
            BatchRoom::Heap(w) => BatchRoom::Heap(w.iter().map(|e| e.each_ref().map(|v| AtomicU64::new(v.load(Relaxed)))).collect()),
            BatchRoom::Kept(k) => BatchRoom::Kept(k.clone()),
        }
    }
}

/// Keeps a used descriptor (`Entry`) in `room`.
#[inline(always)]
pub(super) fn keep([s, w]: &Entry, slot: u16, e: u64) {
    s.store(slot as u64, Relaxed);
    w.store(e, Relaxed);
}

/// Writes the batch `entries` into the ring `ring`: the rest, then the
/// first, its flags last with release ordering, so the guest sees the
/// batch whole or not at all. False if one lies outside (those before it
/// are written).
pub(super) fn store_batch(ring: &Writer, entries: &[Entry]) -> bool {
    let mut entries = entries.iter().map(|[s, w]| (s.load(Relaxed) as u16, w.load(Relaxed)));
    let Some((first, e)) = entries.next() else { return true };
    let at = |slot: u16| slot as usize * DESC_SIZE as usize + 8;
    let head: [u8; 6] = e.to_le_bytes()[..6].try_into().expect("6 bytes");
    entries.all(|(slot, rest)| ring.store(at(slot), rest.to_le_bytes())) && ring.store(at(first), head) && ring.u16_release_at(flags_at(first), (e >> 48) as u16)
}
