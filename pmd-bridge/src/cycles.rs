//! The time-stamp counter, for per-thread cycle accounting.
use crate::ffi;

/// Current TSC value (RDTSC, as `rte_rdtsc`: no serialisation), inline
/// where the CPU has one: through the C shim it was a call as well.
#[inline]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the CPU's time-stamp counter; no memory is touched.
    return unsafe { std::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: reads the CPU's time-stamp counter; no memory is touched.
    unsafe {
        ffi::rte_rdtsc()
    }
}

/// The TSC once every load before it has completed (LFENCE, then
/// RDTSC): what a load took, timed from a `tsc_after_loads` before it.
#[inline]
pub fn tsc_after_loads() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: LFENCE only orders the loads before it; RDTSC reads the
    // time-stamp counter; neither touches memory.
    unsafe {
        std::arch::x86_64::_mm_lfence();
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    tsc()
}

/// TSC ticks per second, as the EAL measured at init.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at init.
    unsafe { ffi::rte_get_tsc_hz() }
}
