//! A burst: a fixed array of owned mbufs plus a length, never on the heap.
use std::mem::MaybeUninit;

use crate::ffi;
use crate::mbuf::Mbuf;

/// The burst size the data path works in.
pub const BURST: usize = 32;

/// Up to `N` owned mbufs. Slots `0..len` are initialised; dropping or
/// clearing the burst frees them in one bulk call.
pub struct Burst<const N: usize = BURST> {
    len: usize,
    slots: [MaybeUninit<Mbuf>; N],
}

impl<const N: usize> Default for Burst<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Burst<N> {
    pub const fn new() -> Self {
        Burst { len: 0, slots: [const { MaybeUninit::uninit() }; N] }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Adds `m` at the end, or hands it back if the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.slots[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` was initialised and is now outside 0..len, so it
        // is read exactly once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: slots 0..len are initialised; MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Mbuf> {
        self.as_slice().iter()
    }

    /// Keeps the mbufs for which `keep` is true, in order; hands each other
    /// one to `reject` (which may count it, move it elsewhere, or drop it).
    pub fn retain(&mut self, mut keep: impl FnMut(&Mbuf) -> bool, mut reject: impl FnMut(Mbuf)) {
        let len = self.len;
        // If `keep` or `reject` panics, the slots not yet visited leak rather
        // than being freed twice.
        self.len = 0;
        for i in 0..len {
            // SAFETY: slot i < len is initialised and read exactly once.
            let m = unsafe { self.slots[i].assume_init_read() };
            if keep(&m) {
                self.slots[self.len].write(m);
                self.len += 1;
            } else {
                reject(m);
            }
        }
    }

    /// Moves every mbuf out, in order, leaving the burst empty. Mbufs the
    /// iterator does not yield are freed when it is dropped.
    pub fn drain(&mut self) -> Drain<'_, N> {
        let end = std::mem::replace(&mut self.len, 0);
        Drain { burst: self, next: 0, end }
    }

    /// Frees every mbuf in one bulk call.
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let n = std::mem::replace(&mut self.len, 0);
        // SAFETY: slots 0..n are owned mbufs laid out as `*mut rte_mbuf`;
        // len is 0 before the call, so none is freed twice.
        unsafe { ffi::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr().cast(), n as u32) }
    }

    /// Free space at the end, as raw pointers for a PMD to fill.
    #[inline]
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut ffi::rte_mbuf, usize) {
        // SAFETY: len <= N, so the pointer stays inside (or one past) the array.
        (unsafe { self.slots.as_mut_ptr().add(self.len).cast() }, N - self.len)
    }

    /// Marks `n` more slots, just filled by a PMD, as owned.
    ///
    /// # Safety
    /// The `n` slots after `len` must hold mbufs whose references we own.
    #[inline]
    pub(crate) unsafe fn assume_filled(&mut self, n: usize) {
        assert!(self.len + n <= N, "a PMD filled more slots than it was given");
        self.len += n;
    }

    /// All mbufs as raw pointers, for a PMD to take from the front.
    #[inline]
    pub(crate) fn as_raw(&mut self) -> *mut *mut ffi::rte_mbuf {
        self.slots.as_mut_ptr().cast()
    }

    /// Forgets the first `n` mbufs (a PMD took them) and moves the unsent
    /// tail to the front, still owned by the burst.
    #[inline]
    pub(crate) fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        let rest = self.len - n;
        // SAFETY: slots n..len are initialised and move to 0..rest; the
        // taken ones are not dropped (the PMD owns them now).
        unsafe { std::ptr::copy(self.slots.as_ptr().add(n), self.slots.as_mut_ptr(), rest) };
        self.len = rest;
    }
}

impl<const N: usize> Burst<N> {
    /// Frees the first `n` mbufs (a copying sender is done with them) and
    /// moves the rest to the front.
    #[inline]
    pub fn free_front(&mut self, n: usize) {
        let n = n.min(self.len);
        if n > 0 {
            // SAFETY: slots 0..n are owned; consume_front forgets exactly them.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.as_raw(), n as u32) };
        }
        self.consume_front(n);
    }
}

impl<const N: usize> Drop for Burst<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<const N: usize> std::fmt::Debug for Burst<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Burst<{N}>[{}]", self.len)
    }
}

/// The iterator of `Burst::drain`. Owns slots `next..end` of the burst.
pub struct Drain<'a, const N: usize> {
    burst: &'a mut Burst<N>,
    next: usize,
    end: usize,
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        self.next += 1;
        // SAFETY: slot next-1 is in next..end, initialised, and read once.
        Some(unsafe { self.burst.slots[self.next - 1].assume_init_read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.end - self.next, Some(self.end - self.next))
    }
}

impl<const N: usize> Drop for Drain<'_, N> {
    fn drop(&mut self) {
        let rest = self.end - self.next;
        if rest > 0 {
            // SAFETY: slots next..end are owned and not yet yielded; the
            // burst's len is already 0, so they are freed exactly once.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.burst.slots.as_mut_ptr().add(self.next).cast(), rest as u32) }
        }
    }
}
