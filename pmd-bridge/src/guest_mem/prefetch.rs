//! Cache-line prefetch hints: never a fault, whatever the address.

/// Asks for the line at `addr` to read (into every cache level).
#[inline(always)]
pub(super) fn prefetchr(addr: usize) {
    prefetch_read::<false>(addr)
}

/// Asks for the line at `addr` to read, into every cache level or (`L2`)
/// into the second level and below.
#[inline(always)]
fn prefetch_read<const L2: bool>(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and writes nothing, whatever `addr`.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T2};
        if L2 {
            _mm_prefetch::<_MM_HINT_T2>(addr as *const i8)
        } else {
            _mm_prefetch::<_MM_HINT_T0>(addr as *const i8)
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// What `prefetch_lines` asks for: to read, to write, to read into the
/// second-level cache only.
pub(super) const READ: u8 = 0;
pub(super) const WRITE: u8 = 1;
pub(super) const READ_L2: u8 = 2;

/// `prefetchr`, `prefetchw` or `prefetch_read::<true>` (by `KIND`) of
/// every line of `n` bytes at `p`.
#[inline(always)]
pub(super) fn prefetch_lines<const KIND: u8>(p: usize, n: usize) {
    let mut line = p & !63;
    while line < p + n {
        match KIND {
            WRITE => prefetchw(line),
            READ_L2 => prefetch_read::<true>(line),
            _ => prefetchr(line),
        }
        line += 64;
    }
}

/// Asks for the line at `addr` in a writable state (PREFETCHW; older CPUs
/// decode it as a NOP).
#[inline(always)]
pub(super) fn prefetchw(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and writes nothing, whatever `addr`.
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) addr, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
