//! Packet-buffer pools (`rte_pktmbuf_pool_create`).
use std::ptr::NonNull;

use crate::error::{cstring, rte_errno, Error, Result};
use crate::mbuf::Mbuf;
use crate::{ffi, log, Eal};

/// Headroom DPDK leaves in front of the data in every mbuf.
pub const HEADROOM: u16 = ffi::RTE_PKTMBUF_HEADROOM as u16;

/// A pool of packet buffers with a per-lcore cache.
///
/// Allocation and free are thread-safe (the default ring_mp_mc ops); the cache
/// is used only by threads that have an lcore id (EAL lcores, or threads
/// registered with `lcore::register_thread`).
pub struct Mempool {
    raw: NonNull<ffi::rte_mempool>,
    /// Fixed at creation; asked per frame by the copy and lending paths,
    /// so kept here rather than asked of C each time.
    data_room: u16,
    _eal: Eal,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe with the
// default ops; the pool's own fields are read-only after creation.
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool only allocates and reads counters.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs, each with `data_room` bytes after the
    /// headroom, and a per-lcore cache of `cache` mbufs.
    #[cold]
    pub fn new(eal: &Eal, name: &str, n: u32, cache: u32, data_room: u16) -> Result<Mempool> {
        let cname = cstring("mempool name", name)?;
        let room = data_room
            .checked_add(HEADROOM)
            .ok_or_else(|| Error::InvalidArgument(format!("data room {data_room} too large")))?;
        // SAFETY: cname is a valid C string; DPDK copies the name.
        let (raw, logged) = log::capture(|| unsafe {
            ffi::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, room, ffi::SOCKET_ID_ANY)
        });
        let raw = NonNull::new(raw).ok_or_else(|| Error::dpdk("rte_pktmbuf_pool_create", rte_errno(), &logged))?;
        Ok(Mempool { raw, data_room, _eal: eal.clone() })
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.raw.as_ptr()
    }

    /// Allocates one mbuf, or None if the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is a valid pktmbuf pool for the life of self.
        let m = unsafe { ffi::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-null mbuf from the pool is freshly allocated and ours.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Fills `burst` up to `n` more mbufs in one call; all or nothing.
    #[inline]
    pub fn alloc_bulk<const N: usize>(&self, burst: &mut crate::Burst<N>, n: usize) -> bool {
        let (slots, room) = burst.spare_raw();
        let n = n.min(room);
        // SAFETY: `slots` has room for n pointers; on success the pool hands
        // us n fresh mbufs, on failure it writes none.
        unsafe {
            if ffi::rte_pktmbuf_alloc_bulk(self.raw.as_ptr(), slots, n as u32) != 0 {
                return false;
            }
            burst.assume_filled(n);
        }
        true
    }

    /// Allocates an mbuf chain holding a copy of `data`, split over as many
    /// segments as the data room requires. None if the pool runs out (any
    /// segments already taken are returned).
    pub fn alloc_from(&self, data: &[u8]) -> Option<Mbuf> {
        let room = self.data_room() as usize;
        let mut chunks = data.chunks(room.max(1));
        let mut head = self.alloc()?;
        head.append(chunks.next().unwrap_or(&[]))?;
        for chunk in chunks {
            let mut seg = self.alloc()?;
            seg.append(chunk)?;
            head.chain(seg).ok()?;
        }
        Some(head)
    }

    /// Size of the data room of each mbuf (without headroom).
    #[inline]
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// Number of mbufs in the pool.
    pub fn size(&self) -> u32 {
        // SAFETY: `size` is written once at creation.
        unsafe { (*self.raw.as_ptr()).size }
    }

    /// Mbufs free in the pool, per-lcore caches included.
    pub fn free_count(&self) -> u32 {
        // SAFETY: counts a valid pool; the result is a snapshot.
        unsafe { ffi::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs allocated and not yet freed.
    pub fn in_use_count(&self) -> u32 {
        // SAFETY: counts a valid pool; the result is a snapshot.
        unsafe { ffi::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let in_use = self.in_use_count();
        if in_use != 0 {
            // An mbuf still out would be freed into freed memory: keep the
            // pool (and the EAL with it) for the rest of the process.
            eprintln!("pmd-bridge: mempool dropped with {in_use} mbufs in use; leaking it");
            std::mem::forget(self._eal.clone());
            return;
        }
        // SAFETY: no mbuf of this pool is alive, and no one else holds the pool.
        unsafe { ffi::rte_mempool_free(self.raw.as_ptr()) };
    }
}

/// Mbufs taken per call: enough to cover most bursts in a call or a few,
/// few enough that a burst needing one gives little back.
pub const REFILL: usize = 8;

/// Fresh mbufs for one burst's outputs (frames copied out of a guest or
/// lent from it, tunnel headers): taken from the pool a few at a time, in
/// one call, as they are needed, and what is left given back in one call
/// when the burst ends, so that the hot path calls C per burst rather than
/// per packet.
#[derive(Default)]
pub struct Stock {
    left: crate::Burst<REFILL>,
}

impl Stock {
    /// A fresh mbuf of `pool`: from the stock, refilled in one call when
    /// empty (one by one if the pool is short).
    #[inline]
    pub fn take(&mut self, pool: &Mempool) -> Option<Mbuf> {
        if let Some(m) = self.left.pop() {
            return Some(m);
        }
        if pool.alloc_bulk(&mut self.left, REFILL) {
            return self.left.pop();
        }
        pool.alloc()
    }

    /// `n` fresh mbufs into the empty `into`, all or none: from the stock,
    /// refilled as `take` refills it; a pool too short for a refill gives
    /// the rest in one call or none (never one mbuf at a time, which would
    /// empty it meanwhile).
    pub fn take_into<const N: usize>(&mut self, pool: &Mempool, n: usize, into: &mut crate::Burst<N>) -> bool {
        debug_assert!(into.is_empty(), "take_into fills an empty burst");
        if n > N {
            return false;
        }
        while into.len() < n {
            if self.left.is_empty() && !pool.alloc_bulk(&mut self.left, REFILL) {
                if pool.alloc_bulk(into, n - into.len()) {
                    return true;
                }
                into.clear();
                return false;
            }
            let _ = into.push(self.left.pop().expect("refilled"));
        }
        true
    }

    /// The burst is over: what it did not take goes back to the pool (a
    /// stock kept between bursts would hold mbufs while the switch idles).
    #[inline]
    pub fn settle(&mut self) {
        self.left.clear();
    }
}
