//! How fast the machine moves a cache line between the switch's core and
//! the generator's, measured just before a cell: the round trip of one
//! line between two threads pinned there, in TSC cycles. Every switch here
//! waits on such transfers (guest rings and buffers are written on one
//! core and read on the other), and on these shared machines they slow
//! down several-fold when another tenant is busy; a row measured in such
//! a period says so, for the peers' rows and ours alike.
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use pmd_bridge::cycles::tsc;
use pmd_bridge::sys::pin_current_thread;

use crate::harness::median;

/// Round trips a batch; the median of `BATCHES` batches is the answer.
const TRIPS: u64 = 2_000;
const BATCHES: usize = 9;

#[repr(align(64))]
struct Line(AtomicU64);

/// Median TSC cycles a round trip of one cache line between cores `a` and
/// `b` takes; None if a thread cannot be pinned or the exchange stalls for
/// a second (a core taken by something else).
pub fn line_round_trip(a: usize, b: usize) -> Option<f64> {
    let line = Line(AtomicU64::new(0));
    let (pinned, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    let both = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            pinned.fetch_add(pin_current_thread(b) as u64, Ordering::Relaxed);
            both.wait();
            if pinned.load(Ordering::Relaxed) < 2 {
                return;
            }
            // Answers each odd value with the next even one.
            let mut want = 1;
            while !stop.load(Ordering::Relaxed) {
                if line.0.load(Ordering::Acquire) == want {
                    line.0.store(want + 1, Ordering::Release);
                    want += 2;
                }
                spin_loop();
            }
        });
        // Not the caller's thread: it keeps its own affinity.
        let initiator = s.spawn(|| {
            pinned.fetch_add(pin_current_thread(a) as u64, Ordering::Relaxed);
            both.wait();
            let batches = (pinned.load(Ordering::Relaxed) == 2).then(|| batches(&line.0)).flatten();
            stop.store(true, Ordering::Relaxed);
            batches
        });
        median(initiator.join().ok()??)
    })
}

/// Cycles a round trip in each batch; None if one takes over a second.
fn batches(line: &AtomicU64) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(BATCHES);
    let mut v = 0;
    for _ in 0..BATCHES {
        let (t0, deadline) = (tsc(), Instant::now() + Duration::from_secs(1));
        for _ in 0..TRIPS {
            line.store(v + 1, Ordering::Release);
            let mut spins = 0u32;
            while line.load(Ordering::Acquire) != v + 2 {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096) && Instant::now() > deadline {
                    return None;
                }
                spin_loop();
            }
            v += 2;
        }
        out.push((tsc() - t0) as f64 / TRIPS as f64);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_goes_round_between_two_cores_or_none_is_said() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            // Two transfers: tens to thousands of cycles, never nothing.
            let rtt = line_round_trip(0, 1).expect("two cores");
            assert!(rtt > 1.0 && rtt < 1e6, "{rtt}");
        }
        assert_eq!(line_round_trip(0, 100_000), None, "no such core: nothing measured");
    }
}
