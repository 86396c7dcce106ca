//! Load for cost measurements: frontends whose rings stay full at almost no
//! cost to the test (one thread refills them when the switch signals it
//! has used a quarter of a ring), and the CPU time the PMD thread spends per
//! packet it takes. CPU time, not cycles: on a shared 2-core machine the
//! PMD thread is preempted for whole time slices, which its TSC-based busy
//! cycles count and its CPU time does not.
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use testbed::wait_until;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vswitch::protocol::{Command, PmdInfo};

use super::frontend::*;
use super::Switchd;

/// Entries per ring of a sender: 1024 frames keep the PMD busy for a
/// fraction of a millisecond while the refill thread wakes.
pub const SIZE: u16 = 1024;

/// A guest that transmits `frame` over and over and takes whatever
/// arrives (2 KB receive buffers, mergeable), with EVENT_IDX so that the
/// switch signals it once per quarter ring (see `with_rings_kept_full`).
pub fn sender(sock: &Path, frame: &[u8]) -> Guest {
    let setup = Setup { size: SIZE, features: VERSION_1 | PROTOCOL_FEATURES | MRG_RXBUF | EVENT_IDX, ..Setup::default() };
    let g = Guest::connect(sock, shared_memory(&[(0, 8 << 20)]), setup);
    let sent = [&[0u8; HDR][..], frame].concat();
    for i in 0..SIZE {
        let rx = HEAP + 2048 * i as u64;
        g.desc(RX, i, (rx, 2048, WRITE, 0));
        let tx = HEAP + (4 << 20) + 2048 * i as u64;
        g.mem.write_slice(&sent, GuestAddress(tx)).unwrap();
        g.desc(TX, i, (tx, sent.len() as u32, 0, 0));
    }
    g.fill_avail(RX, |s| s);
    g.fill_avail(TX, |s| s);
    g
}

/// Rings to keep full (`Guest::keep_full`): with `wake`, the guest took
/// EVENT_IDX and its interrupts wake the refill thread; the others are
/// refilled whenever it wakes.
pub struct Keep<'a> {
    pub g: &'a mut Guest,
    pub queues: &'static [usize],
    pub wake: bool,
}

/// Runs `f` while a thread keeps `keep`'s rings full. The thread runs on
/// core 0 (the PMD thread's is 1) at real-time priority if it may, so that
/// other work on a busy machine does not leave the rings empty.
pub fn with_rings_kept_full<T>(keep: &mut [Keep], f: impl FnOnce() -> T) -> T {
    let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| refill(keep, &stop));
        let _stop = StopOnDrop(&stop);
        f()
    })
}

struct StopOnDrop<'a>(&'a EventFd);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.write(1).unwrap();
    }
}

fn refill(keep: &mut [Keep], stop: &EventFd) {
    run_on_core0_at_rt_priority();
    let quarter = SIZE / 4;
    loop {
        // Each woken ring asks for its next interrupt a quarter ring on; if
        // the switch got there meanwhile, no interrupt will come: go again.
        let mut passed = false;
        for k in keep.iter_mut() {
            for &q in k.queues {
                k.g.keep_full(q);
                if k.wake {
                    let used = k.g.used_idx(q);
                    k.g.used_event(q, used.wrapping_add(quarter));
                    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                    passed |= k.g.used_idx(q).wrapping_sub(used) >= quarter;
                }
            }
        }
        if passed {
            continue;
        }
        let calls = keep.iter().filter(|k| k.wake).flat_map(|k| k.queues.iter().map(|&q| k.g.call(q)));
        let fds = calls.chain([stop]).map(|e| e.as_raw_fd());
        // The timeout covers a PMD thread descheduled for a while (nothing
        // used, nothing signalled): then the rings are looked at anyway.
        pmd_bridge::sys::poll_readable(fds, std::time::Duration::from_millis(10));
        if stop.read().is_ok() {
            return;
        }
        for k in keep.iter().filter(|k| k.wake) {
            for &q in k.queues {
                let _ = k.g.call(q).read();
            }
        }
    }
}

/// The refill thread on CPU 0 under SCHED_FIFO, so that it keeps the rings
/// full however busy the machine is.
fn run_on_core0_at_rt_priority() {
    let (pinned, rt) = (pmd_bridge::sys::pin_current_thread(0), pmd_bridge::sys::set_fifo_priority(1));
    if !(pinned && rt) {
        eprintln!("refill thread: pinned {pinned}, real-time {rt}: rings may run dry on a busy machine");
    }
}

/// The switch's (first) PMD thread, and its packet count.
pub struct PmdClock {
    schedstat: String,
}

impl PmdClock {
    /// The thread DPDK named `rte-worker-*`.
    pub fn of(sw: &Switchd) -> PmdClock {
        let task = format!("/proc/{}/task", sw.proc.pid());
        let worker = std::fs::read_dir(&task).unwrap().map(|e| e.unwrap().path()).find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.starts_with("rte-worker"))
        });
        let t = worker.unwrap_or_else(|| panic!("no rte-worker thread in {task}"));
        PmdClock { schedstat: t.join("schedstat").display().to_string() }
    }

    /// (CPU ns the thread ran, packets it took).
    fn read(&self, sw: &Switchd) -> (u64, u64) {
        let p: Vec<PmdInfo> = serde_json::from_value(sw.ctl(Command::ShowPmd).result).unwrap();
        let s = std::fs::read_to_string(&self.schedstat).unwrap();
        (s.split(' ').next().unwrap().parse().unwrap(), p[0].packets)
    }

    /// CPU ns per packet over the next `n` packets (after `n / 10` to warm
    /// up), or over as many as come within `budget`: a switch that does too
    /// much per packet is measured, not timed out. The counters are read
    /// every few milliseconds (`wait_until`'s pace): reading them as fast as
    /// possible would pull the cache lines the PMD thread writes away from
    /// it, a cost that varied with the machine's load.
    pub fn ns_per_packet(&self, sw: &Switchd, n: u64, budget: Duration) -> f64 {
        let until = |from: (u64, u64), packets: u64, within: Duration| {
            let mut now = from;
            let _ = wait_until(within, "packets", || {
                now = self.read(sw);
                (now.1 - from.1 >= packets).then_some(())
            });
            now
        };
        let warm = until(self.read(sw), n / 10, budget / 10);
        let end = until(warm, n, budget);
        let packets = end.1 - warm.1;
        assert!(packets >= 100, "the PMD thread took {packets} packets in {budget:?}");
        (end.0 - warm.0) as f64 / packets as f64
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
