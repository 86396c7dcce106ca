//! Resuming a packed ring exactly after the switch died.
//!
//! A split ring's used index lives in guest memory, so QEMU, finding no
//! switch to ask for GET_VRING_BASE, resumes from it. A packed ring has no
//! such index: QEMU then keeps the position it last heard of (its
//! `virtio_queue_packed_restore_last_avail_idx` does nothing), the one it
//! sent at the start of the session, which is wrong by however far the
//! ring went since. rte_vhost's inflight region would help, but QEMU sets
//! it up for block and SCSI devices only, never for a network device. So
//! the switch keeps the position itself, in memory of its own that
//! outlives it: the batch's used descriptors as they are added, and before
//! each `publish` the used position before and after the batch
//! (`publish_record`). The guest's ring then tells which of the two holds
//! (`resume_at`): the batch's first slot is used in that lap, or offered
//! again in the next, if the batch became visible. If it is still the
//! guest's available descriptor, the switch died inside `publish`, after
//! the batch's copies, with none, some or all of its descriptors but the
//! first written: the next switch writes them all and goes on after the
//! batch. Chains taken and not yet in a batch being published are taken
//! again, as QEMU's resume of a split ring does.
//!
//! The position is kept in words of a file (`KeptPosition`) with the
//! session it belongs to: the ring's address and size, QEMU's memory, and
//! the base QEMU gave when the session began, which it gives again after
//! the switch died (it never learnt another). A guest that left while the
//! switch ran has its position forgotten; so a kept position is used only
//! for the same ring of the same QEMU, from a switch that went away under
//! it.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pmd_bridge::guest_mem::{GuestMemory, Gpa};
use pmd_bridge::persist::SharedWords;

use super::batch::{store_batch, BatchRoom, Entry};
use super::{flags_at, is_avail, PackedQueue, Pos, DESC_SIZE, MAX_BATCH};

/// The used position (slot | wrap << 15) before and after the batch that
/// `publish` is about to make visible, and how many used descriptors the
/// batch holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishRecord {
    pub before: u16,
    pub after: u16,
    pub entries: u16,
}

/// Which ring of which session a kept position belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSession {
    pub desc: Gpa,
    pub size: u16,
    /// The vring base (avail, used) the frontend gave at the start.
    pub base: (u16, u16),
    /// The frontend's memory (`VhostDevice::memory_id`).
    pub memory: u64,
}

/// One packed ring's words in a `SharedWords` file: the ring's address,
/// the memory's id, a header (tag, size, base; 0: nothing kept), the last
/// `PublishRecord`, and the batch's used descriptors (`batch`).
#[derive(Clone, Debug)]
pub struct KeptPosition {
    words: Arc<SharedWords>,
    at: usize,
}

const TAG: u64 = 0x7061 << 48;

impl KeptPosition {
    pub const WORDS: usize = 4 + 2 * MAX_BATCH;

    /// Ring `ring`'s words of `words`.
    pub fn new(words: Arc<SharedWords>, ring: usize) -> KeptPosition {
        KeptPosition { words, at: ring * Self::WORDS }
    }

    /// Where to resume the ring of `s`: the kept position, if it was kept
    /// for this very session and the ring agrees with it; else the base
    /// the frontend gave. Keeps the position for `s` from then on.
    pub fn resume(&self, mem: &GuestMemory, s: RingSession) -> (u16, u16) {
        let w = |i| self.words.load(self.at + i);
        let header = TAG | (s.size as u64) << 32 | (s.base.0 as u64) << 16 | s.base.1 as u64;
        let kept = (w(2) == header && w(0) == s.desc.0 && w(1) == s.memory && (w(3) >> 32) & 1 == 1)
            .then(|| PublishRecord { before: w(3) as u16, after: (w(3) >> 16) as u16, entries: (w(3) >> 33) as u16 })
            .and_then(|rec| PackedQueue::resume_at(mem, s.desc, s.size, rec, self.batch()).ok());
        let at = kept.map_or(s.base, |at| (at, at));
        // The header last: a switch dying halfway leaves nothing kept.
        self.words.store(self.at + 2, 0);
        self.words.store(self.at, s.desc.0);
        self.words.store(self.at + 1, s.memory);
        self.record(PublishRecord { before: at.1, after: at.1, entries: 0 });
        self.words.store(self.at + 2, header);
        at
    }

    #[inline]
    fn record(&self, rec: PublishRecord) {
        self.words.store(self.at + 3, (rec.entries as u64) << 33 | 1 << 32 | (rec.after as u64) << 16 | rec.before as u64);
    }

    /// Where this ring's batch is kept from `add_used` on (`BatchRoom`).
    pub(super) fn batch(&self) -> &[Entry] {
        self.words.slice(self.at + 4, 2 * MAX_BATCH).as_chunks().0
    }

    /// The guest left while the switch ran: nothing to resume.
    pub fn forget(&self) {
        self.words.store(self.at + 2, 0);
    }
}

impl PackedQueue {
    /// Keeps this ring's position in `k` from now on: its batches, and
    /// before each `publish` the record.
    pub fn keep_position(&mut self, k: KeptPosition) {
        for (to, from) in k.batch().iter().zip(&self.batch.entries()[..self.batch_n]) {
            (0..2).for_each(|i| to[i].store(from[i].load(Relaxed), Relaxed));
        }
        self.batch = BatchRoom::Kept(k);
    }

    /// Keeps the batch's record, before `publish` writes the batch into
    /// the ring: the record names how many of the used descriptors beside
    /// it are the batch's, so they are all there before it.
    #[inline]
    pub(super) fn keep_record(&self) {
        let (BatchRoom::Kept(k), Some(rec)) = (&self.batch, self.publish_record()) else { return };
        k.record(rec);
    }

    /// What to keep, outside guest memory, before calling `publish`; None
    /// if there is nothing to make visible.
    pub fn publish_record(&self) -> Option<PublishRecord> {
        (self.batch_n > 0).then(|| PublishRecord { before: self.published.index(), after: self.next_used.index(), entries: self.batch_n as u16 })
    }

    /// Where to resume (avail and used alike) the packed ring of `size`
    /// slots at `desc` after a switch that kept `rec` last died: `after` if
    /// that batch became visible. If it did not, `after` too once the batch
    /// is finished from `batch`, its used descriptors kept with it: a batch
    /// is recorded after its copies ran, so all it lacked was being shown,
    /// and the switch may have died halfway through writing it, which no
    /// position resumes. With none kept, `before`: its chains are taken
    /// again. Exact when chains are returned in the order they were taken,
    /// as the datapath returns them, and batches are of at most `MAX_BATCH`
    /// (512) used descriptors (the rest are written before `publish`,
    /// unseen behind the first).
    pub fn resume_at(mem: &GuestMemory, desc: Gpa, size: u16, rec: PublishRecord, batch: &[Entry]) -> Result<u16, &'static str> {
        let (first, outside) = (Pos::from_index(rec.before), "ring outside guest memory");
        if first.slot >= size || Pos::from_index(rec.after).slot >= size {
            return Err("ring position beyond the ring");
        }
        let ring = mem.span(desc, size as u32 * DESC_SIZE as u32).ok_or(outside)?;
        let flags = mem.span_u16_acquire(&ring, flags_at(first.slot)).map_err(|_| outside)?;
        if !is_avail(flags, first.wrap) {
            return Ok(rec.after);
        }
        // Only a batch that starts where the record says, inside the ring.
        let slot = |[s, _]: &Entry| s.load(Relaxed);
        let Some(entries) = batch.get(..rec.entries as usize).filter(|e| e.first().is_some_and(|e| slot(e) == first.slot as u64) && e.iter().all(|e| slot(e) < size as u64)) else {
            return Ok(rec.before);
        };
        // As `publish` writes it.
        store_batch(&mem.writer(&ring).ok_or(outside)?, entries).then_some(rec.after).ok_or(outside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtq::test_guest::{DATA, DESC};
    use crate::virtq::test_packed::PackedGuest;
    use crate::virtq::{Chain, Direction, Pop};

    const SIZE: u16 = 4;

    /// Offers `ids` (one slot each) and takes them all.
    fn take(g: &mut PackedGuest, q: &mut PackedQueue, ids: &[u16]) {
        let mut c = Chain::default();
        for &id in ids {
            g.offer(id, &[(DATA + 0x100 * id as u64, 64, 0)]);
        }
        for &id in ids {
            assert_eq!((q.pop(&g.mem, Direction::DeviceReads, &mut c), c.head), (Ok(Pop::Chain), id));
        }
    }

    /// The switch dies with `rec` kept (and no batch with it); a new one
    /// resumes where it says.
    fn restart(g: &PackedGuest, rec: PublishRecord) -> PackedQueue {
        queue_at(g, PackedQueue::resume_at(&g.mem, Gpa(DESC), SIZE, rec, &[]).unwrap())
    }

    /// A new switch's queue on `g`'s ring, at `at` (avail and used alike).
    fn queue_at(g: &PackedGuest, at: u16) -> PackedQueue {
        let [d, dr, dv] = g.rings.map(Gpa);
        PackedQueue::new(SIZE, d, dr, dv, (at, at), &g.mem, g.features).unwrap()
    }

    const SESSION: RingSession = RingSession { desc: Gpa(DESC), size: SIZE, base: (0x8000, 0x8000), memory: 7 };

    fn heads(g: &PackedGuest, q: &mut PackedQueue) -> Vec<u16> {
        let mut c = Chain::default();
        std::iter::from_fn(|| (q.pop(&g.mem, Direction::DeviceReads, &mut c) == Ok(Pop::Chain)).then_some(c.head)).collect()
    }

    #[test]
    fn a_batch_never_made_visible_is_taken_again() {
        let mut g = PackedGuest::new(SIZE);
        let mut q = g.queue();
        assert_eq!(q.publish_record(), None);
        take(&mut g, &mut q, &[0, 1, 2]);
        for id in [0, 1, 2] {
            q.add_used(&g.mem, id, 0).unwrap();
        }
        let rec = q.publish_record().unwrap();
        assert_eq!(rec, PublishRecord { before: 0x8000, after: 0x8003, entries: 3 });
        let mut q = restart(&g, rec);
        assert_eq!(heads(&g, &mut q), [0, 1, 2]);
        for id in [0, 1, 2] {
            q.add_used(&g.mem, id, 0).unwrap();
        }
        q.publish(&g.mem).unwrap();
        assert_eq!(std::iter::from_fn(|| g.used()).map(|u| u.0).collect::<Vec<_>>(), [0, 1, 2], "each once");
    }

    #[test]
    fn a_batch_made_visible_is_not_even_once_the_guest_offered_its_slots_again() {
        for offered_again in [false, true] {
            let mut g = PackedGuest::new(SIZE);
            let mut q = g.queue();
            take(&mut g, &mut q, &[3, 1, 0, 2]);
            for id in [3, 1, 0, 2] {
                q.add_used(&g.mem, id, 0).unwrap();
            }
            let rec = q.publish_record().unwrap();
            q.publish(&g.mem).unwrap();
            assert_eq!(q.publish_record(), None);
            // The switch is gone; the guest reads what it got back, and may
            // fill the whole ring again in the next lap.
            while g.used().is_some() {}
            if offered_again {
                for id in 0..SIZE {
                    g.offer(id, &[(DATA, 64, 0)]);
                }
            }
            let mut q = restart(&g, rec);
            assert_eq!(q.indices(), (0x0000, 0x0000), "one lap on");
            assert_eq!(heads(&g, &mut q), if offered_again { vec![0, 1, 2, 3] } else { vec![] });
        }
    }

    #[test]
    fn chains_in_flight_at_the_death_are_taken_again() {
        let mut g = PackedGuest::new(SIZE);
        let mut q = g.queue();
        take(&mut g, &mut q, &[0, 1, 2]);
        q.add_used(&g.mem, 0, 0).unwrap();
        let rec = q.publish_record().unwrap();
        q.publish(&g.mem).unwrap();
        assert_eq!(g.used().map(|u| u.0), Some(0));
        let mut q = restart(&g, rec);
        assert_eq!(heads(&g, &mut q), [1, 2]);
    }

    #[test]
    fn a_kept_position_serves_only_the_session_it_was_kept_for() {
        let dir = tempfile::tempdir().unwrap();
        let words = Arc::new(SharedWords::open(&dir.path().join("rings"), 2 * KeptPosition::WORDS).unwrap());
        let mut g = PackedGuest::new(SIZE);
        let kept = KeptPosition::new(Arc::clone(&words), 1);
        assert_eq!(kept.resume(&g.mem, SESSION), (0x8000, 0x8000), "nothing kept yet: the frontend's base");
        let mut q = g.queue();
        q.keep_position(kept.clone());
        take(&mut g, &mut q, &[0, 1]);
        for id in [0, 1] {
            q.add_used(&g.mem, id, 0).unwrap();
        }
        q.publish(&g.mem).unwrap();
        drop(q); // the switch dies; QEMU gives its old base again
        let other = |f: fn(&mut RingSession)| {
            let mut s = SESSION;
            f(&mut s);
            s
        };
        for (s, why) in [
            (other(|s| s.memory = 8), "another QEMU"),
            (other(|s| s.base = (0x8002, 0x8002)), "a base QEMU learnt since"),
            (other(|s| s.desc = Gpa(DESC + 0x100)), "another ring"),
        ] {
            let scratch = KeptPosition::new(Arc::new(SharedWords::open(&dir.path().join("copy"), 2 * KeptPosition::WORDS).unwrap()), 1);
            (0..KeptPosition::WORDS).for_each(|i| scratch.words.store(scratch.at + i, words.load(kept.at + i)));
            assert_eq!(scratch.resume(&g.mem, s), s.base, "{why}");
        }
        let reopened = KeptPosition::new(Arc::new(SharedWords::open(&dir.path().join("rings"), 2 * KeptPosition::WORDS).unwrap()), 1);
        assert_eq!(reopened.resume(&g.mem, SESSION), (0x8002, 0x8002), "the same session resumes past the batch");
        reopened.forget();
        assert_eq!(reopened.resume(&g.mem, SESSION), SESSION.base, "a guest that left is not resumed");
        assert_eq!(KeptPosition::new(words, 0).resume(&g.mem, SESSION), SESSION.base, "another ring's words are its own");
    }

    /// A guest's fresh ring and our queue on it, its position kept in a
    /// file of `dir` for `SESSION`.
    fn kept_queue(dir: &tempfile::TempDir) -> (PackedGuest, KeptPosition, PackedQueue) {
        let words = Arc::new(SharedWords::open(&dir.path().join("rings"), KeptPosition::WORDS).unwrap());
        let g = PackedGuest::new(SIZE);
        let kept = KeptPosition::new(words, 0);
        assert_eq!(kept.resume(&g.mem, SESSION), SESSION.base);
        let mut q = g.queue();
        q.keep_position(kept.clone());
        (g, kept, q)
    }

    /// A switch killed inside `publish`: the batch recorded and its used
    /// descriptors kept with it, none or some of them written into the
    /// ring, the first slot still available. The next switch finishes the
    /// batch, so the guest gets each chain back once, with its length, and
    /// the ring goes on. Before, it resumed at `before`: taking the chains
    /// again, or, the second slot already used, stopping the ring for good.
    #[test]
    fn regression_a_switch_killed_inside_publish_leaves_a_batch_the_next_one_finishes() {
        for written in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            let (mut g, kept, mut q) = kept_queue(&dir);
            take(&mut g, &mut q, &[0, 1, 2]);
            for id in [0, 1, 2] {
                q.add_used(&g.mem, id, 10 + id as u32).unwrap();
            }
            // `publish` began: the record kept, then `written` of the rest
            // stored as it stores them (the second slot's descriptor).
            q.keep_record();
            for [slot, rest] in &kept.batch()[1..=written] {
                let (slot, rest) = (slot.load(Relaxed), rest.load(Relaxed));
                g.mem.write(Gpa(DESC + 16 * slot + 8), &rest.to_le_bytes()).unwrap();
            }
            drop(q);
            assert_eq!(kept.resume(&g.mem, SESSION), (0x8003, 0x8003), "{written} written: past the batch");
            let used: Vec<_> = std::iter::from_fn(|| g.used()).map(|u| (u.0, u.1)).collect();
            assert_eq!(used, [(0, 10), (1, 11), (2, 12)], "{written} written: each chain once");
            let mut q = queue_at(&g, 0x8003);
            take(&mut g, &mut q, &[3]);
        }
    }

    /// The next batch's used descriptors overwrite the last one's in the
    /// kept words as they are added; a switch that dies before publishing
    /// them resumes after the visible batch and takes their chains again.
    #[test]
    fn a_batch_added_over_the_kept_one_and_never_published_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut g, kept, mut q) = kept_queue(&dir);
        take(&mut g, &mut q, &[0, 1]);
        q.add_used_all(&g.mem, [(0, 0), (1, 0)].into_iter()).unwrap();
        q.publish(&g.mem).unwrap();
        take(&mut g, &mut q, &[2, 3]);
        q.add_used_all(&g.mem, [(2, 0), (3, 0)].into_iter()).unwrap();
        drop(q);
        assert_eq!(kept.resume(&g.mem, SESSION), (0x8002, 0x8002), "past the visible batch only");
        assert_eq!(std::iter::from_fn(|| g.used()).map(|u| u.0).collect::<Vec<_>>(), [0, 1], "nothing of the unpublished batch shown");
        let mut q = queue_at(&g, 0x8002);
        assert_eq!(heads(&g, &mut q), [2, 3]);
    }

    #[test]
    fn a_record_that_does_not_fit_the_ring_is_refused() {
        let g = PackedGuest::new(SIZE);
        let r = |before, after| PackedQueue::resume_at(&g.mem, Gpa(DESC), SIZE, PublishRecord { before, after, entries: 0 }, &[]);
        assert_eq!(r(0x8004, 0x8000), Err("ring position beyond the ring"));
        assert_eq!(r(0x8000, 0x0004), Err("ring position beyond the ring"));
        assert_eq!(PackedQueue::resume_at(&g.mem, Gpa(0x3fff0), SIZE, PublishRecord::default(), &[]), Err("ring outside guest memory"));
    }
}
