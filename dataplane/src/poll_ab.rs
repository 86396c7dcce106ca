//! Two ways of one step, measured inside one switch: for experiments. Each
//! poll goes way A or way B at random and each way's busy cycles and
//! packets are summed apart, so both ways meet the same state of the
//! machine, the same guests and the same traffic. Runs of `vswitch-bench`
//! swing between phases by far more than a change of a few percent moves
//! (one build's 64 B phases: 83 and 179 cycles a packet in one run); inside
//! one switch, the halves of an A/A run agreed within 0.2% in every phase.
//!
//! An experiment's code parts where `way_b()` says. `VSWITCHD_POLL_AB=<file>`
//! (read by `Switch::start`) makes each PMD thread pick a way before every
//! poll and append a line to `<file>` every 2^21 packets: the process id,
//! way A's and way B's cycles a packet, B over A, and each way's packets a
//! busy poll. `<file>:aa` takes way A both halves (the method's check).
//! Unset, nothing picks and `way_b()` is false.
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

thread_local! {
    static WAY_B: Cell<bool> = const { Cell::new(false) };
}

/// Whether the poll running on this thread goes way B.
#[inline]
pub fn way_b() -> bool {
    WAY_B.with(Cell::get)
}

/// The packets, both ways together, a line sums.
const LINE_EVERY: u64 = 1 << 21;

/// `VSWITCHD_POLL_AB`'s value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollAbConfig {
    pub path: PathBuf,
    /// Way A both halves.
    pub a_a: bool,
}

impl PollAbConfig {
    pub const ENV: &'static str = "VSWITCHD_POLL_AB";

    pub fn parse(v: &str) -> Result<PollAbConfig, String> {
        let (path, a_a) = v.strip_suffix(":aa").map_or((v, false), |p| (p, true));
        if path.is_empty() {
            return Err(format!("{}: {v:?} names no file (<file> or <file>:aa)", Self::ENV));
        }
        Ok(PollAbConfig { path: path.into(), a_a })
    }
}

/// One PMD thread's picks and sums.
pub struct PollAb {
    rng: u64,
    a_a: bool,
    way: usize,
    /// Each way's busy cycles, packets and busy polls.
    sums: [[u64; 3]; 2],
    out: File,
}

impl PollAb {
    pub fn open(cfg: &PollAbConfig) -> std::io::Result<PollAb> {
        let out = OpenOptions::new().create(true).append(true).open(&cfg.path)?;
        Ok(PollAb { rng: 0x9e37_79b9_7f4a_7c15, a_a: cfg.a_a, way: 0, sums: [[0; 3]; 2], out })
    }

    /// Picks the way of the poll about to run. At random (xorshift64), not
    /// in turn: taken in turn, one way's polls each followed one of the
    /// other's, and came with other bursts (28.4 frames a poll against
    /// 30.8 for two ways that differed by a division).
    #[inline]
    pub fn pick(&mut self) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.way = (self.rng & 1) as usize;
        let b = self.way == 1 && !self.a_a;
        WAY_B.with(|w| w.set(b));
    }

    /// Adds a busy poll to its way's sums; a line once they hold enough.
    pub fn busy(&mut self, cycles: u64, packets: usize) {
        let s = &mut self.sums[self.way];
        s[0] += cycles;
        s[1] += packets as u64;
        s[2] += 1;
        let [a, b] = self.sums;
        if a[1] + b[1] >= LINE_EVERY && a[1] > 0 && b[1] > 0 {
            let (ca, cb) = (a[0] as f64 / a[1] as f64, b[0] as f64 / b[1] as f64);
            // An experiment's file that cannot be written ends its lines,
            // not the switch.
            let _ = writeln!(self.out, "{} {ca:.2} {cb:.2} {:.4} {:.2} {:.2}", std::process::id(), cb / ca, a[1] as f64 / a[2] as f64, b[1] as f64 / b[2] as f64);
            self.sums = [[0; 3]; 2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs 2^16 polls of 32 packets, way A 1 cycle a packet and way B 2:
    /// the ways taken, and the one line written.
    fn run(value: &str, file: &std::path::Path) -> ([u32; 2], Vec<String>) {
        let mut ab = PollAb::open(&PollAbConfig::parse(value).unwrap()).unwrap();
        let mut ways = [0u32; 2];
        for _ in 0..1 << 16 {
            ab.pick();
            let b = way_b();
            ways[b as usize] += 1;
            ab.busy(if b { 64 } else { 32 }, 32);
        }
        (ways, std::fs::read_to_string(file).unwrap().lines().map(String::from).collect())
    }

    #[test]
    fn each_poll_goes_one_way_at_random_and_counts_for_that_way_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ab");
        let (ways, lines) = run(file.to_str().unwrap(), &file);
        assert!(ways.iter().all(|&w| (30_000..35_536).contains(&w)), "about half each way: {ways:?}");
        assert_eq!(lines.len(), 1, "one line for 2^21 packets: {lines:?}");
        let f: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!(f[1..], ["1.00", "2.00", "2.0000", "32.00", "32.00"], "{}", lines[0]);
    }

    #[test]
    fn an_a_a_run_never_takes_way_b_and_sums_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aa");
        let (ways, lines) = run(&format!("{}:aa", file.display()), &file);
        assert_eq!(ways[1], 0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with(" 1.00 1.00 1.0000 32.00 32.00"), "{}", lines[0]);
    }

    #[test]
    fn a_value_without_a_file_is_refused() {
        assert!(PollAbConfig::parse("").is_err());
        assert!(PollAbConfig::parse(":aa").is_err());
        assert_eq!(PollAbConfig::parse("/tmp/x"), Ok(PollAbConfig { path: "/tmp/x".into(), a_a: false }));
    }
}
