//! Ingress policing: a port's `ingress_policing_rate` (kbit/s) and
//! `ingress_policing_burst` (kbit), with OVS's semantics.
//!
//! A token bucket on the input port, filled at the rate and as deep as the
//! burst (8000 kbit when 0), full at the start. Each received frame passes
//! if the bucket holds its length, which then leaves the bucket, and is
//! dropped otherwise (`policed`), frame by frame: a large frame may be
//! dropped and a small one after it pass. As OVS's DPDK policer does, a
//! frame's length is counted without its Ethernet header. Dropped frames
//! are not learned from or forwarded.
//!
//! One bucket serves all of a port's rx queues, on whatever threads: it is
//! one atomic word, `empty_at`, the TSC time at which the bucket was (or
//! would have been) empty, so that it holds the bytes the rate gives in
//! `now - empty_at`, up to the burst. A burst of frames is decided against
//! it at once and the word moved on by the bytes passed, with a
//! compare-and-swap that decides again if another thread moved it first.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::parse::ETH_HLEN;

/// OVS's burst when `ingress_policing_burst` is 0.
pub const DEFAULT_BURST_KBIT: u64 = 8000;

#[derive(Debug)]
pub struct Policer {
    bytes_per_sec: u64,
    hz: u64,
    /// The burst, as the cycles the rate takes to give it.
    depth: u64,
    empty_at: AtomicU64,
}

impl Policer {
    /// A full bucket of `burst_kbit` (0: the default) filled at `rate_kbps`
    /// (more than 0), on a TSC of `hz` ticks per second.
    pub fn new(rate_kbps: u64, burst_kbit: u64, hz: u64) -> Policer {
        let burst = if burst_kbit == 0 { DEFAULT_BURST_KBIT } else { burst_kbit };
        let mut p = Policer { bytes_per_sec: rate_kbps.max(1) * 1000 / 8, hz, depth: 0, empty_at: AtomicU64::new(0) };
        p.depth = p.cycles(burst * 1000 / 8);
        p
    }

    /// The cycles the rate takes to give `bytes`, rounded up.
    fn cycles(&self, bytes: u64) -> u64 {
        (u128::from(bytes) * u128::from(self.hz)).div_ceil(u128::from(self.bytes_per_sec)) as u64
    }

    /// The bytes `cycles` give, rounded down.
    fn bytes(&self, cycles: u64) -> u64 {
        (u128::from(cycles) * u128::from(self.bytes_per_sec) / u128::from(self.hz)) as u64
    }

    /// Which frames of a burst (their lengths, 64 at most) pass at TSC time
    /// `now`: bit i for frame i.
    pub fn admit(&self, lens: impl Iterator<Item = usize> + Clone, now: u64) -> u64 {
        let mut pass = 0;
        let _ = self.empty_at.fetch_update(Relaxed, Relaxed, |empty_at| {
            // A bucket holds no more than the burst.
            let start = empty_at.max(now.saturating_sub(self.depth));
            let have = self.bytes(now.saturating_sub(start));
            let (mut used, mut bits) = (0, 0u64);
            for (i, len) in lens.clone().enumerate().take(64) {
                let len = len.saturating_sub(ETH_HLEN) as u64;
                if used + len <= have {
                    used += len;
                    bits |= 1 << i;
                }
            }
            pass = bits;
            Some(start + self.cycles(used))
        });
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000_000; // a TSC tick is a nanosecond
    const SEC: u64 = HZ;

    /// Frames of `len` bytes offered every `gap` ticks for `secs` seconds:
    /// the bytes (without Ethernet headers) that passed.
    fn offer(p: &Policer, len: usize, gap: u64, secs: u64) -> u64 {
        let mut passed = 0;
        for t in (0..secs * SEC).step_by(gap as usize) {
            if p.admit(std::iter::once(len), SEC + t) == 1 {
                passed += (len - ETH_HLEN) as u64;
            }
        }
        passed
    }

    #[test]
    fn a_stream_over_the_rate_gets_the_burst_and_the_rate() {
        // 8000 kbit/s = 1 MB/s, a 400 kbit (50 kB) bucket; 1000-byte
        // payloads at 2 MB/s for 10 s.
        let p = Policer::new(8000, 400, HZ);
        let passed = offer(&p, 1014, SEC / 2000, 10);
        let want = 50_000 + 10 * 1_000_000;
        assert!(passed.abs_diff(want) <= 1000, "{passed} bytes passed, the bucket gave {want}");
    }

    #[test]
    fn a_stream_under_the_rate_passes_untouched() {
        let p = Policer::new(8000, 400, HZ);
        assert_eq!(offer(&p, 1014, SEC / 500, 10), 5000 * 1000, "0.5 MB/s of 1 MB/s");
    }

    #[test]
    fn frame_by_frame_a_small_frame_passes_where_a_large_one_does_not() {
        // 1500 bytes of bucket: full at the start, nothing more meanwhile.
        let p = Policer::new(8000, 12, HZ);
        assert_eq!(p.admit([1014usize, 1014, 114, 14, 10].into_iter(), SEC), 0b11101);
        // 1 ms later the rate has given 1000 bytes again.
        assert_eq!(p.admit([1014usize, 1014].into_iter(), SEC + SEC / 1000), 0b01);
    }

    #[test]
    fn an_idle_bucket_fills_to_the_burst_only_and_the_default_burst_is_8000_kbit() {
        let p = Policer::new(8000, 0, HZ);
        // An hour idle gives 1 MB (8000 kbit), not 3.6 GB.
        let frames = std::iter::repeat_n(1014usize, 64);
        let mut passed = 0;
        for k in 0..100 {
            passed += p.admit(frames.clone(), 3600 * SEC + k).count_ones();
        }
        assert_eq!(passed, 1000);
    }

    #[test]
    fn threads_sharing_a_port_share_its_bucket() {
        // Two threads offer 1 MB/s each on one clock, as TSCs are.
        let p = std::sync::Arc::new(Policer::new(8000, 400, HZ));
        let clock = std::sync::Arc::new(AtomicU64::new(SEC));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (p, clock) = (std::sync::Arc::clone(&p), std::sync::Arc::clone(&clock));
                std::thread::spawn(move || (0..10_000).filter(|_| p.admit(std::iter::once(1014), clock.fetch_add(SEC / 2000, Relaxed)) == 1).count() as u64 * 1000)
            })
            .collect();
        let passed: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let want = 50_000 + 10 * 1_000_000;
        assert!(passed.abs_diff(want) <= 5000, "{passed} bytes passed, the bucket gave {want}");
    }
}
