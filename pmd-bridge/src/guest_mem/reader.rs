//! Reads and writes of one span, checked once for a pass over many of its
//! entries.
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use super::{prefetchr, store_volatile, GuestMemory, Span};

/// A span of a live memory, checked once for many reads: what a span
/// access checks each time, less the span's owner. It borrows the memory,
/// which therefore stays mapped while it lives. The guest may write its
/// bytes meanwhile: each read is one volatile load, never a reference.
#[derive(Clone, Copy)]
pub struct Reader<'m> {
    base: *const u8,
    len: usize,
    _mem: PhantomData<&'m GuestMemory>,
}

impl<'m> Reader<'m> {
    /// `len` bytes at `base`, inside a region of `_mem` (the caller checked).
    pub(super) fn new(_mem: &'m GuestMemory, base: *const u8, len: usize) -> Reader<'m> {
        Reader { base, len, _mem: PhantomData }
    }

    /// The little-endian u16 at `off`, if it lies inside and is aligned.
    #[inline(always)]
    pub fn u16_at(&self, off: usize) -> Option<u16> {
        // The address's own alignment, not the span's: sound however the
        // reader was made.
        if self.len >= 2 && off <= self.len - 2 && (self.base as usize + off).is_multiple_of(2) {
            // SAFETY: 2 aligned bytes inside the span, of memory the borrow
            // keeps mapped.
            Some(u16::from_le(unsafe { std::ptr::read_volatile(self.base.add(off).cast::<u16>()) }))
        } else {
            None
        }
    }

    /// `u16_at` with acquire ordering: a flags word the guest stores last,
    /// with release, after what it covers.
    #[inline(always)]
    pub fn u16_acquire_at(&self, off: usize) -> Option<u16> {
        if self.len >= 2 && off <= self.len - 2 && (self.base as usize + off).is_multiple_of(2) {
            // SAFETY: as in `u16_at`; atomic, as the guest's own accesses are.
            Some(u16::from_le(unsafe { AtomicU16::from_ptr(self.base.add(off).cast_mut().cast()) }.load(Ordering::Acquire)))
        } else {
            None
        }
    }

    /// The 16 bytes at `off` as two little-endian words, the second (a
    /// packed descriptor's len, id and flags) read first, with acquire
    /// ordering: when its flags are the guest's last store, what the guest
    /// stored before them is seen in both. None unless they lie inside and
    /// are 8-aligned.
    #[inline(always)]
    pub fn desc_acquire_at(&self, off: usize) -> Option<[u64; 2]> {
        if self.len < 16 || off > self.len - 16 || !(self.base as usize + off).is_multiple_of(8) {
            return None;
        }
        // SAFETY: an aligned u64 inside the span (checked above), of memory
        // the borrow keeps mapped; atomic, as the guest's flags store is.
        let second = unsafe { AtomicU64::from_ptr(self.base.add(off + 8).cast_mut().cast()) }.load(Ordering::Acquire);
        // SAFETY: the aligned u64 before it, inside the span as well.
        let first = unsafe { std::ptr::read_volatile(self.base.add(off).cast::<u64>()) };
        Some([u64::from_le(first), u64::from_le(second)])
    }

    /// How many of the `n` u16s at `off`, `off + stride`, `off + 2 *
    /// stride`..., read in order with acquire ordering, `keep` accepts
    /// before the first it refuses: a ring's flags words, scanned with one
    /// range check for the run (off the hot path since pops read each
    /// slot's flags with its descriptor, so a plain loop). None if the run
    /// does not lie inside or its words are misaligned (nothing is read
    /// then).
    #[inline(always)]
    pub fn u16_acquire_run(&self, off: usize, stride: usize, n: usize, keep: impl Fn(u16) -> bool) -> Option<usize> {
        if n == 0 {
            return Some(0);
        }
        let last = stride.checked_mul(n - 1).and_then(|d| d.checked_add(off))?;
        if self.len < 2 || last > self.len - 2 || !(self.base as usize + off).is_multiple_of(2) || !stride.is_multiple_of(2) {
            return None;
        }
        let p = self.base.wrapping_add(off);
        // SAFETY: the k-th word (k < n) ends at or before the last, checked
        // inside the span above, and is aligned (base + off and stride
        // even); atomic, as the guest's own accesses are.
        let load = |k: usize| u16::from_le(unsafe { AtomicU16::from_ptr(p.wrapping_add(k * stride).cast_mut().cast()) }.load(Ordering::Acquire));
        Some((0..n).take_while(|&k| keep(load(k))).count())
    }

    /// Starts loading the line at `off` (a hint; nothing past the end).
    #[inline(always)]
    pub fn prefetch(&self, off: usize) {
        if off < self.len {
            prefetchr(self.base as usize + off);
        }
    }

    /// The `W` little-endian u64 words at `off` (a descriptor), if they lie
    /// inside and are aligned.
    #[inline(always)]
    pub fn words_at<const W: usize>(&self, off: usize) -> Option<[u64; W]> {
        if self.len >= 8 * W && off <= self.len - 8 * W && (self.base as usize + off).is_multiple_of(8) {
            // SAFETY: 8 * W bytes inside the span, each word aligned, of
            // memory the borrow keeps mapped.
            Some(std::array::from_fn(|i| u64::from_le(unsafe { std::ptr::read_volatile(self.base.add(off + 8 * i).cast::<u64>()) })))
        } else {
            None
        }
    }
}

/// A span of a live memory, checked once for many stores (a batch of used
/// descriptors): each store checks only its offset, and marks its bytes
/// dirty while a migration logs them, as every store into guest memory
/// does.
pub struct Writer<'m> {
    mem: &'m GuestMemory,
    base: *mut u8,
    len: usize,
    gpa: u64,
}

impl<'m> Writer<'m> {
    /// Span `s`, inside a region of `mem` (the caller checked).
    pub(super) fn new(mem: &'m GuestMemory, s: &Span) -> Writer<'m> {
        Writer { mem, base: s.host as *mut u8, len: s.len as usize, gpa: s.gpa.0 }
    }

    /// Stores `v` at `off` in one go (volatile, as `GuestMemory::store`);
    /// false, storing nothing, if it does not lie inside.
    #[inline(always)]
    pub fn store<const N: usize>(&self, off: usize, v: [u8; N]) -> bool {
        if self.len < N || off > self.len - N {
            return false;
        }
        store_volatile(self.base.wrapping_add(off), v);
        self.mem.log_write(self.gpa + off as u64, N as u64);
        true
    }

    /// Stores the little-endian u16 `v` at `off` with release ordering (a
    /// flags word that makes what it covers visible); false, storing
    /// nothing, if it does not lie inside or is misaligned.
    #[inline(always)]
    pub fn u16_release_at(&self, off: usize, v: u16) -> bool {
        if self.len < 2 || off > self.len - 2 || !(self.base as usize + off).is_multiple_of(2) {
            return false;
        }
        // SAFETY: 2 aligned bytes inside the span (checked above), of
        // memory the borrow keeps mapped; atomic, as the guest's own are.
        unsafe { AtomicU16::from_ptr(self.base.add(off).cast()) }.store(v.to_le(), Ordering::Release);
        self.mem.log_write(self.gpa + off as u64, 2);
        true
    }
}
