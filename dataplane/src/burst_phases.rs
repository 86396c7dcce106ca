//! Where a guest burst's cycles go, for experiments (as `poll_ab`):
//! `VSWITCHD_BURST_PHASES=<file>` (read by `Switch::start`) makes each PMD
//! thread time every burst it takes from a copy-once guest, phase by phase,
//! and append a line to `<file>` every 2^21 frames: the process id, then for
//! each input port slot and kind of burst (`full`: a whole `BURST`; `part`:
//! fewer), the frames a burst and each phase's cycles a frame. Full and
//! partial bursts apart because a short burst pays a whole poll's fixed
//! costs: `vswitch-bench` 2vm-rings takes packed rings' frames in bursts
//! of 13-24 where split rings' come whole, and the two kinds only compare
//! at the same burst.
//!
//! Unset, each mark is one read of a thread-local flag.
use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use pmd_bridge::cycles::tsc;
use pmd_bridge::BURST;

use crate::counters::MAX_PORTS;

/// A guest burst's phases, in order. The first four are
/// `CopyOnceRx::recv`'s, apart because the ring kinds differ there: a
/// packed ring paid more than a split one in pop, and in heads on the
/// first port of a pair polled (2vm-rings 64 B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The sender's ring looked at: chains returned early, how many are on
    /// offer, the burst's ring lines taken ahead.
    Ring,
    /// Its chains popped, their first lines requested.
    Pop,
    /// The outputs' rings taken ahead.
    Ahead,
    /// Its headers read into scratch, its refused chains and bad headers
    /// counted.
    Heads,
    /// Its frames captured, if a capture is on, and decided (learning,
    /// lookups, policing).
    Classify,
    /// Its frames delivered: receive chains taken and headers written.
    Deliver,
    /// Its payload copies run and the receivers' used entries published.
    Finish,
    /// Its chains returned to the sender.
    Commit,
}

const PHASES: usize = 8;
const NAMES: [&str; PHASES] = ["ring", "pop", "ahead", "heads", "classify", "deliver", "finish", "commit"];
const LINE_EVERY: u64 = 1 << 21;

pub const ENV: &str = "VSWITCHD_BURST_PHASES";

/// One slot's bursts of one kind: frames, bursts, cycles by phase.
#[derive(Clone, Copy, Default)]
struct Sums {
    frames: u64,
    bursts: u64,
    cycles: [u64; PHASES],
}

/// One PMD thread's timings.
pub struct BurstPhases {
    out: File,
    /// By slot: full bursts, then partial ones.
    sums: Box<[[Sums; 2]; MAX_PORTS]>,
    frames: u64,
    /// The last mark's time stamp, and the burst's phases so far (both
    /// reset by `start`, before every poll).
    last: u64,
    burst: [u64; PHASES],
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static THREAD: RefCell<Option<BurstPhases>> = const { RefCell::new(None) };
}

impl BurstPhases {
    pub fn open(path: &Path) -> std::io::Result<BurstPhases> {
        let out = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BurstPhases { out, sums: Box::new([[Sums::default(); 2]; MAX_PORTS]), frames: 0, last: 0, burst: [0; PHASES] })
    }

    /// The line of what was summed since the last one.
    fn line(&self) -> String {
        let mut line = std::process::id().to_string();
        for (slot, kinds) in self.sums.iter().enumerate() {
            for (s, kind) in kinds.iter().zip(["full", "part"]).filter(|(s, _)| s.frames > 0) {
                line += &format!(" | s{slot} {kind} {:.1}", s.frames as f64 / s.bursts as f64);
                for (name, c) in NAMES.iter().zip(s.cycles) {
                    line += &format!(" {name} {:.1}", c as f64 / s.frames as f64);
                }
            }
        }
        line
    }

    fn end(&mut self, slot: u16, frames: usize) {
        let s = &mut self.sums[slot as usize % MAX_PORTS][(frames < BURST) as usize];
        s.frames += frames as u64;
        s.bursts += 1;
        s.cycles.iter_mut().zip(self.burst).for_each(|(c, b)| *c += b);
        self.frames += frames as u64;
        if self.frames >= LINE_EVERY {
            // An experiment's file that cannot be written ends its lines,
            // not the switch.
            let _ = writeln!(self.out, "{}", self.line());
            *self.sums = [[Sums::default(); 2]; MAX_PORTS];
            self.frames = 0;
        }
    }
}

/// Makes `phases` this thread's (None: marks do nothing).
pub fn install(phases: Option<BurstPhases>) {
    ON.with(|on| on.set(phases.is_some()));
    THREAD.with(|t| *t.borrow_mut() = phases);
}

#[inline]
fn with(f: impl FnOnce(&mut BurstPhases)) {
    if ON.with(Cell::get) {
        THREAD.with(|t| t.borrow_mut().as_mut().map(f));
    }
}

/// A poll about to receive.
#[inline]
pub fn start() {
    with(|p| {
        p.last = tsc();
        p.burst = [0; PHASES];
    });
}

/// `phase` of the burst ends now.
#[inline]
pub fn mark(phase: Phase) {
    with(|p| {
        let t = tsc();
        p.burst[phase as usize] += t - std::mem::replace(&mut p.last, t);
    });
}

/// The burst of `frames` from port `slot` is done.
#[inline]
pub fn end(slot: u16, frames: usize) {
    with(|p| p.end(slot, frames));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_summed_by_slot_and_kind_and_a_line_written_every_2_21_frames() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("phases");
        install(Some(BurstPhases::open(&file).unwrap()));
        // 2^16 full bursts from slot 3 and one partial from slot 1 (first,
        // so that it is in the line).
        for (slot, frames) in std::iter::once((1, 8)).chain(std::iter::repeat_n((3, BURST), (LINE_EVERY as usize) / BURST)) {
            start();
            for phase in [Phase::Ring, Phase::Pop, Phase::Ahead, Phase::Heads, Phase::Classify, Phase::Deliver, Phase::Finish, Phase::Commit] {
                mark(phase);
            }
            end(slot, frames);
        }
        install(None);
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let parts: Vec<&str> = lines[0].split(" | ").collect();
        assert_eq!(parts[0], std::process::id().to_string());
        assert!(parts[1].starts_with("s1 part 8.0 ring "), "{}", parts[1]);
        assert!(parts[2].starts_with("s3 full 32.0 ring "), "{}", parts[2]);
        assert_eq!(parts[2].split(' ').skip(3).step_by(2).collect::<Vec<_>>(), NAMES, "{}", parts[2]);
        assert_eq!(parts.len(), 3, "no other slot: {}", lines[0]);
    }

    #[test]
    fn without_phases_installed_marks_do_nothing() {
        install(None);
        start();
        mark(Phase::Heads);
        end(0, BURST);
        THREAD.with(|t| assert!(t.borrow().is_none()));
    }
}
