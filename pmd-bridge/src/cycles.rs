//! The time-stamp counter, for per-thread cycle accounting.
use crate::ffi;

/// Current TSC value (`rte_rdtsc`: no serialisation, a few cycles).
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter; no memory is touched.
    unsafe { ffi::rte_rdtsc() }
}

/// TSC ticks per second, as the EAL measured at init.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at init.
    unsafe { ffi::rte_get_tsc_hz() }
}
