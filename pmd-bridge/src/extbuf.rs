//! Zero-copy transmit out of guest memory: an mbuf chain whose first
//! segment holds the switch's private copy of a frame's headers and whose
//! further segments are external buffers over the payload where the guest
//! left it (`rte_pktmbuf_attach_extbuf`, done here with field writes).
//!
//! A `Lender` belongs to one guest transmit ring and to the one thread that
//! walks it. It has a fixed number of slots, one per chain that may be in
//! flight; each slot holds the `rte_mbuf_ext_shared_info` every external
//! segment of its chain points at (in switch memory: DPDK's init helper
//! would write it into the buffer's tail, i.e. into the guest). Its
//! reference count is the number of those segments; DPDK calls its free
//! callback when the last one is freed, on whichever thread frees it (a NIC
//! driver frees transmitted mbufs lazily, a ring hands them to another
//! thread). The callback only sets the slot's bit in `Completions`, an
//! atomic bitmap; the owner drains it (`Lender::reap`) and writes the used
//! entries itself. No lock, no allocation per packet.
//!
//! The external segments point into the switch's own mapping of the guest's
//! memory (`LendMap`), never rte_vhost's: while any chain is in flight the
//! lender holds that map, and its slots outlive every callback: a lender
//! dropped with chains in flight leaks both rather than free them under a
//! NIC. So a guest's memory table may change, or the guest go, while a NIC
//! holds its buffers: the NIC reads on from pages nobody unmaps.
use std::cell::UnsafeCell;
use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::guest_mem::{GuestMemory, Span};
use crate::lend_map::LendMap;
use crate::mbuf::Mbuf;
use crate::mempool::{Mempool, Stock};
use crate::{ffi, Burst};

/// Most external segments in one chain; a frame spread over more buffers is
/// copied instead (a 64 KB segment from Linux takes about 19; NICs cap
/// segments per packet, often at 8 to 40).
pub const MAX_EXT_SEGS: usize = 32;

/// Most bytes of headers before a lent frame's payload.
pub const MAX_HEAD: usize = 256;

/// Most mbufs one chain's frames take: a 64 KB segment cut into 45 frames
/// of 1448 bytes, each over one or two of the guest's pages.
pub const MAX_LENT_MBUFS: usize = 192;

/// One bit per slot, set on any thread when the slot's chain is freed, read
/// and cleared by the owner.
pub struct Completions {
    words: Box<[AtomicU64]>,
}

impl Completions {
    pub fn new(slots: usize) -> Completions {
        Completions { words: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Slot `slot`'s chain is done. Release: whatever the freeing thread
    /// (and the device before it) did with the buffers happens before the
    /// owner sees the bit.
    #[inline]
    pub fn mark(&self, slot: u16) {
        self.words[slot as usize / 64].fetch_or(1 << (slot % 64), Ordering::Release);
    }

    /// Calls `f` for each slot marked since the last drain, clearing it;
    /// returns how many. A word with nothing set costs one load.
    #[inline]
    pub fn drain(&self, mut f: impl FnMut(u16)) -> usize {
        let mut n = 0;
        for (w, word) in self.words.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                f((w * 64) as u16 + bits.trailing_zeros() as u16);
                bits &= bits - 1;
                n += 1;
            }
        }
        n
    }
}

/// One chain's shared info; the callback finds its bit from it.
struct Slot {
    shinfo: UnsafeCell<ffi::rte_mbuf_ext_shared_info>,
    done: *const Completions,
    index: u16,
}

struct Slots {
    slots: Box<[Slot]>,
    done: Completions,
}

// SAFETY: a slot's shared info is written only by the owner while the slot
// is free (no chain points at it); once lent, DPDK updates its count
// atomically and calls the callback once, which only marks `done` (atomic).
unsafe impl Send for Slots {}
// SAFETY: as above.
unsafe impl Sync for Slots {}

/// DPDK's free callback for our external segments: the last segment of a
/// chain was freed, on any thread.
unsafe extern "C" fn on_free(_addr: *mut c_void, opaque: *mut c_void) {
    // SAFETY: `opaque` is the Slot that `lend` set for this shared info; the
    // slots outlive every chain lent from them (see the module comment).
    let slot = unsafe { &*(opaque as *const Slot) };
    // SAFETY: `done` points at the Completions in the same allocation.
    unsafe { &*slot.done }.mark(slot.index);
}

/// Whether `shinfo` is one of ours: a segment over guest memory, which no
/// one may write through an mbuf.
pub(crate) fn is_guest_buffer(shinfo: &ffi::rte_mbuf_ext_shared_info) -> bool {
    shinfo.free_cb.is_some_and(|f| f as usize == on_free as *const () as usize)
}

/// Why a frame could not be lent (the caller copies it instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LendError {
    /// Every slot is in flight: the ring's in-flight bound.
    Full,
    /// Chains of another memory (before a table change) are still out.
    OtherMemory,
    /// The memory could not be mapped for lending.
    NotMapped,
    /// More than `MAX_EXT_SEGS` pieces, or bytes outside the spans.
    Shape,
    /// The pool is empty.
    NoMbuf,
}

/// Bytes where a guest left them: `len` bytes after the first `skip` of
/// `spans` (a descriptor chain's buffers).
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    pub spans: &'a [Span],
    pub skip: u64,
    pub len: u64,
}

/// The zero-copy side of one guest transmit ring (see the module comment).
pub struct Lender {
    shared: Arc<Slots>,
    /// Slots not in flight.
    free: Vec<u16>,
    /// The caller's tag (a descriptor head) of each slot's chain.
    tags: Box<[u16]>,
    /// The mapping the chains in flight point into.
    map: Option<Arc<LendMap>>,
    /// One frame's headers, and its payload's host pieces (address,
    /// length): scratch kept here, not zeroed on the stack per loan.
    head: [u8; MAX_HEAD],
    pieces: [(usize, u16); MAX_EXT_SEGS],
}

impl Lender {
    /// A lender for at most `slots` chains in flight (1 to 32768).
    pub fn new(slots: u16) -> Lender {
        let n = slots.clamp(1, 32768) as usize;
        let mut shared = Arc::new(Slots {
            slots: (0..n).map(|i| Slot { shinfo: UnsafeCell::new(Default::default()), done: std::ptr::null(), index: i as u16 }).collect(),
            done: Completions::new(n),
        });
        let s = Arc::get_mut(&mut shared).expect("just made");
        let done: *const Completions = &s.done;
        s.slots.iter_mut().for_each(|slot| slot.done = done);
        Lender {
            shared,
            free: (0..n as u16).rev().collect(),
            tags: vec![0; n].into_boxed_slice(),
            map: None,
            head: [0; MAX_HEAD],
            pieces: [(0, 0); MAX_EXT_SEGS],
        }
    }

    pub fn capacity(&self) -> usize {
        self.tags.len()
    }

    pub fn in_flight(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// A chain for one frame: `head` (the private header copy) in a segment
    /// from `pool` (through the burst's `stock`), then `payload` (in `mem`)
    /// as external segments. `tag` comes back from `reap` once every
    /// segment is freed, by anyone.
    pub fn lend(&mut self, fresh: (&Mempool, &mut Stock), mem: &GuestMemory, tag: u16, head: &[u8], payload: Payload) -> Result<Mbuf, LendError> {
        if head.len() > MAX_HEAD {
            return Err(LendError::Shape);
        }
        let mut lent = None;
        self.lend_frames(fresh, mem, tag, 1, |_, buf| {
            buf[..head.len()].copy_from_slice(head);
            (head.len(), payload)
        }, |m| lent = Some(m))?;
        lent.ok_or(LendError::Shape)
    }

    /// `n` frames over one guest chain (a TCP segment cut for a NIC without
    /// TSO, as librte_gso cuts one): `frame(k, buf)` writes frame `k`'s
    /// headers into `buf` (up to `MAX_HEAD` bytes) and says how many, and
    /// which payload follows them. Each frame is its header copy followed
    /// by external segments, given to `emit` in order; `tag` comes back from
    /// `reap` once every segment of every frame is freed. All or nothing:
    /// nothing is emitted unless every frame could be made.
    pub fn lend_frames<'p>(
        &mut self,
        (pool, stock): (&Mempool, &mut Stock),
        mem: &GuestMemory,
        tag: u16,
        n: usize,
        mut frame: impl FnMut(usize, &mut [u8; MAX_HEAD]) -> (usize, Payload<'p>),
        mut emit: impl FnMut(Mbuf),
    ) -> Result<(), LendError> {
        let map = mem.lend_map().ok_or(LendError::NotMapped)?;
        if self.map.as_ref().is_some_and(|m| !Arc::ptr_eq(m, map)) {
            return Err(LendError::OtherMemory);
        }
        let &slot = self.free.last().ok_or(LendError::Full)?;
        let (head, pieces) = (&mut self.head, &mut self.pieces);
        // Every external segment first: the shared count must hold them all
        // before the first frame leaves, and no allocation may fail after.
        // A single frame's headers and pieces stay in the scratch from the
        // count to the build: made once.
        let mut ext = 0;
        let mut only = None;
        for k in 0..n {
            let (h, payload) = frame(k, head);
            match pieces_of(mem, map, &payload, pieces) {
                Some(p) if p > 0 && h <= (pool.data_room() as usize).min(MAX_HEAD) => ext += p,
                _ => return Err(LendError::Shape),
            }
            only = (n == 1).then_some((h, payload, ext));
        }
        let mut segs = Burst::<MAX_LENT_MBUFS>::new();
        if n + ext > MAX_LENT_MBUFS || ext > u16::MAX as usize {
            return Err(LendError::Shape);
        }
        if !stock.take_into(pool, n + ext, &mut segs) {
            return Err(LendError::NoMbuf);
        }
        let s = &self.shared.slots[slot as usize];
        // SAFETY: the slot is free, so no chain points at its shared info and
        // no callback can read it; the chains made below are handed over only
        // after these writes (a send publishes them to the freeing thread).
        unsafe {
            let info = s.shinfo.get();
            (*info).free_cb = Some(on_free);
            (*info).fcb_opaque = s as *const Slot as *mut c_void;
            (*info).refcnt = ext as u16;
        }
        let mut it = segs.drain();
        for k in 0..n {
            let (h, payload, p) = match only {
                Some(made) => made,
                None => {
                    let (h, payload) = frame(k, head);
                    (h, payload, pieces_of(mem, map, &payload, pieces).expect("counted above"))
                }
            };
            let mut first = it.next().expect("n + ext allocated");
            // A fresh mbuf takes `data_room` bytes (checked above).
            first.fill(&head[..h]).expect("a fresh mbuf takes the headers");
            let first_raw = first.into_raw().as_ptr();
            let mut last = first_raw;
            for (m, &(addr, len)) in it.by_ref().take(p).zip(&pieces[..p]) {
                let m = m.into_raw().as_ptr();
                // `m` is a fresh mbuf we own; these are rte_pktmbuf_attach_extbuf's
                // writes (IOVA = VA) plus the data length, and link it after
                // `last`, also ours alone; `addr..+len` lies in our lend map,
                // kept mapped while the chain is out.
                // SAFETY: fresh mbufs of ours only, over mapped guest memory.
                unsafe {
                    (*m).buf_addr = addr as *mut c_void;
                    (*m).buf_iova = addr as u64;
                    (*m).buf_len = len;
                    (*m).data_off = 0;
                    (*m).data_len = len;
                    (*m).ol_flags |= ffi::RTE_MBUF_F_EXTERNAL;
                    (*m).shinfo = s.shinfo.get();
                    (*last).next = m;
                    last = m;
                }
            }
            // SAFETY: the head is ours alone (fresh); its counters now cover
            // the external segments linked to it.
            unsafe {
                (*first_raw).nb_segs = p as u16 + 1;
                (*first_raw).pkt_len = (h as u64 + payload.len) as u32;
            }
            // SAFETY: a whole chain we built and own, handed over once.
            emit(unsafe { Mbuf::from_raw(NonNull::new_unchecked(first_raw)) });
        }
        self.free.pop();
        self.tags[slot as usize] = tag;
        self.map.get_or_insert_with(|| Arc::clone(map));
        Ok(())
    }

    /// Takes the chains freed since the last call: `f(tag)` for each, in the
    /// order found (not the order lent). The mapping is let go once none is
    /// in flight. Returns how many came back.
    #[inline]
    pub fn reap(&mut self, mut f: impl FnMut(u16)) -> usize {
        if self.free.len() == self.tags.len() {
            return 0;
        }
        let (free, tags) = (&mut self.free, &self.tags);
        let n = self.shared.done.drain(|slot| {
            free.push(slot);
            f(tags[slot as usize]);
        });
        if self.free.len() == self.tags.len() {
            self.map = None;
        }
        n
    }

    /// The tags of the chains still in flight, which NICs may go on reading
    /// (the guest gets them back now, as it would after a crash of the
    /// switch; their slots come back through `reap` as before).
    pub fn in_flight_tags(&self) -> impl Iterator<Item = u16> + '_ {
        let mut out = vec![true; self.tags.len()];
        self.free.iter().for_each(|&s| out[s as usize] = false);
        self.tags.iter().zip(out).filter(|&(_, o)| o).map(|(&t, _)| t)
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        if self.in_flight() > 0 {
            // A device may still read the buffers and free them later: keep
            // the slots its callback will touch, and the memory it reads.
            eprintln!("pmd-bridge: a guest ring's lender dropped with {} chain(s) in flight; its memory stays mapped", self.in_flight());
            std::mem::forget(Arc::clone(&self.shared));
            std::mem::forget(self.map.take());
        }
    }
}

/// The pieces of `p` in `map`, each at most 65535 bytes (an mbuf's buffer
/// length is 16 bits); None past `MAX_EXT_SEGS`, outside the spans or
/// outside the map.
fn pieces_of(mem: &GuestMemory, map: &LendMap, p: &Payload, out: &mut [(usize, u16); MAX_EXT_SEGS]) -> Option<usize> {
    let (mut k, mut left, mut skip) = (0, p.len, p.skip);
    for s in p.spans {
        if left == 0 {
            break;
        }
        let sl = s.len() as u64;
        if skip >= sl {
            skip -= sl;
            continue;
        }
        let mut off = skip;
        skip = 0;
        while off < sl && left > 0 {
            let n = (sl - off).min(left).min(u16::MAX as u64);
            let p = mem.host_range(s, off as usize, n as usize).ok()?;
            *out.get_mut(k)? = (map.own(p as usize, n as usize)?, n as u16);
            k += 1;
            off += n;
            left -= n;
        }
    }
    (left == 0).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_come_back_once_each_in_any_order_from_any_thread() {
        let done = Arc::new(Completions::new(130));
        let threads: Vec<_> = (0..4u16)
            .map(|t| {
                let done = Arc::clone(&done);
                std::thread::spawn(move || (0..130u16).filter(|s| s % 4 == t).rev().for_each(|s| done.mark(s)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let mut seen = Vec::new();
        assert_eq!(done.drain(|s| seen.push(s)), 130);
        seen.sort();
        assert_eq!(seen, (0..130).collect::<Vec<_>>());
        assert_eq!(done.drain(|_| panic!("drained twice")), 0);
    }

    #[test]
    fn marks_racing_a_drain_are_never_lost() {
        let done = Arc::new(Completions::new(64));
        let marker = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for round in 0..300u32 {
                    done.mark((round % 64) as u16);
                    // Each slot is marked again only after the owner took it
                    // (a slot is lent once at a time).
                    while done.words[0].load(Ordering::Acquire) & (1 << (round % 64)) != 0 {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut got = 0;
        while got < 300 {
            got += done.drain(|_| ());
        }
        marker.join().unwrap();
        assert_eq!(got, 300);
    }

    #[test]
    fn pieces_split_at_span_ends_and_at_64_kb() {
        let mem = GuestMemory::new_owned(&[(0, 0x30000)]);
        let mut spans = Vec::new();
        mem.translate(crate::guest_mem::Gpa(0x100), 100, |s| spans.push(s)).unwrap();
        mem.translate(crate::guest_mem::Gpa(0x1000), 0x20000, |s| spans.push(s)).unwrap();
        let mut out = [(0, 0); MAX_EXT_SEGS];
        let p = |skip, len| Payload { spans: &spans, skip, len };
        let map = mem.lend_map().unwrap();
        let k = pieces_of(&mem, map, &p(60, 40 + 0x20000), &mut out).unwrap();
        assert_eq!(out[..k].iter().map(|p| p.1).collect::<Vec<_>>(), [40, 65535, 65535, 2]);
        assert_eq!(pieces_of(&mem, map, &p(60, 41 + 0x20000), &mut out), None, "past the chain");
        assert_eq!(pieces_of(&mem, map, &p(100, 10), &mut out), Some(1), "the first span skipped");
    }
}
