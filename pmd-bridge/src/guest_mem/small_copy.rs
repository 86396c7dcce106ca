//! Copies of a frame's headers, a few dozen bytes of a length known only
//! when they are read, without a call: `copy_nonoverlapping` of such a
//! length calls memcpy, and a 60-byte frame's headers missed the
//! fixed-size copies kept for 64 bytes (`--bench vm2vm` 60 B: 84
//! instructions a frame more than 64 B).

/// Copies `n` bytes from `src` to `dst`; from 16 to 128 bytes as two copies
/// of a fixed size that overlap in the middle, as memcpy does inside.
///
/// # Safety
/// As `std::ptr::copy_nonoverlapping(src, dst, n)`.
#[inline(always)]
pub(super) unsafe fn copy(src: *const u8, dst: *mut u8, n: usize) {
    // A length of twice `K` is two copies side by side.
    match n {
        // SAFETY: 64 <= n, as `overlapping` asks; the rest is the caller's.
        65..=128 => unsafe { overlapping::<64>(src, dst, n) },
        // SAFETY: 32 <= n, as above.
        33..=64 => unsafe { overlapping::<32>(src, dst, n) },
        // SAFETY: 16 <= n, as above.
        16..=32 => unsafe { overlapping::<16>(src, dst, n) },
        // SAFETY: the caller's contract is this call's.
        _ => unsafe { std::ptr::copy_nonoverlapping(src, dst, n) },
    }
}

/// # Safety
/// As `copy`, with `K <= n`.
#[inline(always)]
unsafe fn overlapping<const K: usize>(src: *const u8, dst: *mut u8, n: usize) {
    debug_assert!(K <= n);
    // Both pieces are read before either is written; unaligned, as guests'
    // buffers are.
    // SAFETY: `K <= n`: the pieces at 0 and `n - K` lie in the caller's `n` bytes.
    unsafe {
        let (a, b) = (src.cast::<[u8; K]>().read_unaligned(), src.add(n - K).cast::<[u8; K]>().read_unaligned());
        dst.cast::<[u8; K]>().write_unaligned(a);
        dst.add(n - K).cast::<[u8; K]>().write_unaligned(b);
    }
}
