//! Reads of one span, checked once for a pass over many of its entries.
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU16, Ordering};

use super::{prefetchr, GuestMemory};

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
