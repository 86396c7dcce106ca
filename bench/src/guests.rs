//! The real-guest row: two QEMU guests (TCG, one vCPU each) on a switch,
//! one fetching a file of random bytes from the other over HTTP/TCP. The
//! receiving guest times the fetch itself (/proc/uptime, 10 ms ticks) and
//! the md5 of both copies must match. Under TCG the guests' own CPU is the
//! limit: what a switch changes is how many frames (and so interrupts,
//! checksums, TCP segments) the guests' kernels handle per byte, which is
//! what guest offloads are for.
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use testbed::{Guest, GuestImage, GuestNet, SocketRole};

use crate::gen::{PortOpts, Ring};
use crate::harness::median;
use crate::peers::{Flavor, OvsFlavor, Running, Setup, SwitchKind};

/// A switch set up for the guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestSetup {
    /// vswitchd, copy-once ports, offloads negotiated (the default config).
    CopyOnce,
    /// vswitchd, copy-once ports with `offloads = false`.
    CopyOnceNoOffloads,
    /// vswitchd, rte_vhost ports, offloads negotiated.
    RteVhost,
    /// OVS-DPDK NORMAL with `other_config:userspace-tso-enable=true`.
    OvsTso,
    /// OVS-DPDK NORMAL as installed (no userspace TSO).
    Ovs,
}

impl GuestSetup {
    pub const ALL: [GuestSetup; 5] = [GuestSetup::CopyOnce, GuestSetup::CopyOnceNoOffloads, GuestSetup::RteVhost, GuestSetup::OvsTso, GuestSetup::Ovs];

    pub fn name(self) -> &'static str {
        match self {
            GuestSetup::CopyOnce => "copy-once",
            GuestSetup::CopyOnceNoOffloads => "copy-once-no-offloads",
            GuestSetup::RteVhost => "rte-vhost",
            GuestSetup::OvsTso => "ovs-dpdk-tso",
            GuestSetup::Ovs => "ovs-dpdk",
        }
    }

    pub fn parse(s: &str) -> Option<GuestSetup> {
        Self::ALL.into_iter().find(|g| g.name() == s)
    }

    fn kind(self) -> SwitchKind {
        match self {
            GuestSetup::CopyOnce | GuestSetup::CopyOnceNoOffloads => SwitchKind::Vswitchd(Flavor::CopyOnce),
            GuestSetup::RteVhost => SwitchKind::Vswitchd(Flavor::RteVhost),
            GuestSetup::OvsTso | GuestSetup::Ovs => SwitchKind::Ovs(OvsFlavor::Normal),
        }
    }

    /// vswitchd's `offloads` key, or OVS's userspace TSO.
    fn offloads(self) -> bool {
        !matches!(self, GuestSetup::CopyOnceNoOffloads | GuestSetup::Ovs)
    }
}

/// One timed transfer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestRow {
    pub setup: String,
    pub repeat: usize,
    pub bytes: u64,
    /// As the receiving guest timed it.
    pub seconds: f64,
    pub mbit_s: f64,
    /// Both guests negotiated HOST_TSO4 and GUEST_TSO4.
    pub guests_tso: bool,
    /// vswitchd's mean frame sent to the receiving guest: over the MTU
    /// when segments cross whole. (The switches' cycles per packet mean
    /// little here: the switch core mostly waits for the guests.)
    pub bytes_per_frame_to_receiver: Option<f64>,
}

/// One setup over its repeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestSummary {
    pub setup: String,
    pub repeats: usize,
    pub mbit_s: f64,
    pub mbit_s_min: f64,
    pub mbit_s_max: f64,
    /// Median Mbit/s over ovs-dpdk-tso's, and over copy-once-no-offloads'.
    pub vs_ovs_tso: Option<f64>,
    pub vs_no_offloads: Option<f64>,
    pub guests_tso: bool,
    pub bytes_per_frame_to_receiver: Option<f64>,
}

/// What the run measures, and with what.
#[derive(Clone, Debug)]
pub struct GuestPlan {
    pub setups: Vec<GuestSetup>,
    pub repeats: usize,
    pub megabytes: u32,
    /// The guests' CPUs (taskset list), away from the switch's poll core.
    pub cpus: String,
}

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(600);
const SENDER_IP: &str = "10.0.0.1";

/// Boots a guest on `socket` (the switch connects to QEMU), pinned to `cpus`.
fn boot(image: &GuestImage, socket: &std::path::Path, n: u8, cpus: &str) -> Result<Guest, String> {
    let net = GuestNet {
        socket: socket.to_path_buf(),
        role: SocketRole::QemuServer,
        mac: format!("52:54:00:00:00:{n:02x}"),
        ip: format!("10.0.0.{n}/24"),
        mtu: None,
        packed: false,
    };
    let mut g = Guest::boot(&format!("guest{n}"), image, &net)?;
    // Threads QEMU starts later inherit the affinity.
    let pid = g.proc().pid().to_string();
    let out = Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid]).output().map_err(|e| format!("taskset: {e}"))?;
    if !out.status.success() {
        return Err(format!("taskset -c {cpus}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    g.wait_ready(BOOT)?;
    Ok(g)
}

/// Both TSO bits (HOST_TSO4 = 11, GUEST_TSO4 = 7) of the guest's driver.
fn guest_tso(g: &mut Guest) -> Result<bool, String> {
    let out = g.run_ok("cat /sys/bus/virtio/devices/virtio0/features", CMD)?;
    let bits = out.split_whitespace().find(|t| t.len() >= 32 && t.bytes().all(|c| c == b'0' || c == b'1')).ok_or(format!("no feature bits in {out:?}"))?;
    Ok([7, 11].iter().all(|&b| bits.as_bytes()[b] == b'1'))
}

fn md5(g: &mut Guest, file: &str) -> Result<String, String> {
    let out = g.run_ok(&format!("md5sum {file}"), CMD)?;
    out.split_whitespace().find(|t| t.len() == 32 && t.bytes().all(|c| c.is_ascii_hexdigit())).map(str::to_owned).ok_or(format!("md5sum said {out:?}"))
}

/// Reads `T <start> <end>` (seconds of uptime) from the timed command's output.
pub fn parse_timing(out: &str) -> Option<f64> {
    let line = out.lines().find_map(|l| l.trim().strip_prefix("T "))?;
    let mut it = line.split_whitespace().map(|t| t.parse::<f64>().ok());
    let (a, b) = (it.next()??, it.next()??);
    (b >= a).then_some(b - a)
}

/// One transfer through `setup`: the switch started, two guests booted on
/// it, the file fetched, timed and checked; everything stopped again.
pub fn measure(image: &GuestImage, base: &Setup, plan: &GuestPlan, setup: GuestSetup, repeat: usize) -> Result<GuestRow, String> {
    let s = Setup { offloads: setup.offloads(), ..base.clone() };
    let opts = PortOpts { mtu: 1500, tso: setup.offloads(), ring: Ring::Split };
    let mut sw = Running::start(setup.kind(), &s, 2, crate::harness::Topology::Vms, 1, opts)?;
    let res = transfer(image, &mut sw, plan, setup, repeat).map_err(|e| format!("{e}{}", sw.log_hint()));
    sw.stop();
    res
}

fn transfer(image: &GuestImage, sw: &mut Running, plan: &GuestPlan, setup: GuestSetup, repeat: usize) -> Result<GuestRow, String> {
    let mut tx = boot(image, &sw.sockets[0], 1, &plan.cpus)?;
    let mut rx = boot(image, &sw.sockets[1], 2, &plan.cpus)?;
    sw.wait_connected()?;
    let guests_tso = guest_tso(&mut tx)? && guest_tso(&mut rx)?;
    let mb = plan.megabytes;
    tx.run_ok(&format!("mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count={mb} 2>/dev/null && httpd -p 80 -h /www"), CMD)?;
    // Addresses resolved and MACs learned before the clock starts.
    testbed::wait_until(Duration::from_secs(60), "the sending guest to answer ping", || {
        rx.run(&format!("ping -c 1 -W 1 {SENDER_IP}"), CMD).is_ok_and(|(rc, _)| rc == 0).then_some(())
    })?;
    sw.begin()?;
    let fetch = format!("read a b < /proc/uptime; wget -q -O /tmp/f http://{SENDER_IP}/f; rc=$?; read c d < /proc/uptime; echo T $a $c; exit $rc");
    let out = rx.run_ok(&format!("( {fetch} )"), CMD)?;
    let seconds = parse_timing(&out).ok_or(format!("no timing in {out:?}"))?;
    let (sent, got) = (md5(&mut tx, "/www/f")?, md5(&mut rx, "/tmp/f")?);
    if sent != got {
        return Err(format!("the file arrived changed: md5 {got}, sent {sent}"));
    }
    let receiver = sw.port_tx().and_then(|ports| ports.into_iter().nth(1));
    let bytes = u64::from(mb) << 20;
    Ok(GuestRow {
        setup: setup.name().into(),
        repeat,
        bytes,
        seconds,
        mbit_s: bytes as f64 * 8.0 / seconds.max(0.01) / 1e6,
        guests_tso,
        bytes_per_frame_to_receiver: receiver.filter(|&(_, n)| n > 0).map(|(b, n)| b as f64 / n as f64),
    })
}

/// Every setup `plan.repeats` times, alternated (A B C, then B C A...).
/// Rows measured, and one line per failed transfer.
pub fn run(image: &GuestImage, base: &Setup, plan: &GuestPlan, stop: &dyn Fn() -> bool) -> (Vec<GuestRow>, Vec<String>) {
    let (mut rows, mut failed) = (Vec::new(), Vec::new());
    let k = plan.setups.len();
    for repeat in 0..plan.repeats {
        for i in 0..k {
            if stop() {
                return (rows, failed);
            }
            let setup = plan.setups[(i + repeat) % k];
            eprint!("[{}/{}] {} repeat {} ...", repeat * k + i + 1, k * plan.repeats, setup.name(), repeat + 1);
            match measure(image, base, plan, setup, repeat) {
                Ok(r) => {
                    eprintln!(" {:.0} Mbit/s ({:.2} s, guests' TSO {})", r.mbit_s, r.seconds, if r.guests_tso { "on" } else { "off" });
                    rows.push(r);
                }
                Err(e) => {
                    eprintln!(" failed: {}", e.lines().next().unwrap_or(""));
                    failed.push(format!("{} repeat {}: {e}", setup.name(), repeat + 1));
                }
            }
        }
    }
    (rows, failed)
}

/// Medians per setup, in the plan's order, with the ratios.
pub fn summarize(setups: &[GuestSetup], rows: &[GuestRow]) -> Vec<GuestSummary> {
    let of = |name: &str| rows.iter().filter(|r| r.setup == name).collect::<Vec<_>>();
    let mbit = |name: &str| median(of(name).iter().map(|r| r.mbit_s).collect());
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b.filter(|&b| b > 0.0)?);
    let (ovs_tso, no_off) = (mbit(GuestSetup::OvsTso.name()), mbit(GuestSetup::CopyOnceNoOffloads.name()));
    setups
        .iter()
        .filter_map(|s| {
            let rs = of(s.name());
            let m = mbit(s.name())?;
            Some(GuestSummary {
                setup: s.name().into(),
                repeats: rs.len(),
                mbit_s: m,
                mbit_s_min: rs.iter().map(|r| r.mbit_s).fold(f64::INFINITY, f64::min),
                mbit_s_max: rs.iter().map(|r| r.mbit_s).fold(0.0, f64::max),
                vs_ovs_tso: ratio(Some(m), ovs_tso),
                vs_no_offloads: ratio(Some(m), no_off),
                guests_tso: rs.iter().all(|r| r.guests_tso),
                bytes_per_frame_to_receiver: median(rs.iter().filter_map(|r| r.bytes_per_frame_to_receiver).collect()),
            })
        })
        .collect()
}

pub fn table(sums: &[GuestSummary], failed: &[String], plan: &GuestPlan) -> String {
    let opt = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "two QEMU guests (TCG, 1 vCPU each, on CPUs {}), {} MB over HTTP/TCP, timed in the receiving guest\n{:<22} {:>4} {:>8} {:>17} {:>7} {:>8} {:>9} {:>8}\n",
        plan.cpus, plan.megabytes, "setup", "n", "Mbit/s", "min..max", "TSO", "xOVS-TSO", "xno-offl", "B/frame"
    );
    for r in sums {
        s.push_str(&format!(
            "{:<22} {:>4} {:>8.0} {:>17} {:>7} {:>8} {:>9} {:>8}\n",
            r.setup,
            r.repeats,
            r.mbit_s,
            format!("{:.0}..{:.0}", r.mbit_s_min, r.mbit_s_max),
            if r.guests_tso { "on" } else { "off" },
            opt(r.vs_ovs_tso, 2),
            opt(r.vs_no_offloads, 2),
            opt(r.bytes_per_frame_to_receiver, 0),
        ));
    }
    s.push_str(
        "TSO: both guests negotiated HOST_TSO4 and GUEST_TSO4; xOVS-TSO, xno-offl: median Mbit/s over ovs-dpdk-tso's and \
         copy-once-no-offloads'; B/frame: mean frame \
         vswitchd sent to the receiving guest\n",
    );
    for f in failed {
        s.push_str(&format!("failed: {}\n", f.lines().next().unwrap_or("")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_read_from_the_guests_output() {
        assert_eq!(parse_timing("noise\nT 12.50 14.75\n"), Some(2.25));
        assert_eq!(parse_timing("T 14.75 12.50"), None, "time does not run backwards");
        assert_eq!(parse_timing("T x 1"), None);
        assert_eq!(parse_timing(""), None);
    }

    #[test]
    fn ratios_are_to_ovs_with_tso_and_to_no_offloads() {
        let row = |s: GuestSetup, m: f64| GuestRow { setup: s.name().into(), mbit_s: m, ..Default::default() };
        let rows = [
            row(GuestSetup::CopyOnce, 600.0),
            row(GuestSetup::CopyOnce, 900.0),
            row(GuestSetup::CopyOnce, 800.0),
            row(GuestSetup::CopyOnceNoOffloads, 200.0),
            row(GuestSetup::OvsTso, 400.0),
        ];
        let sums = summarize(&[GuestSetup::CopyOnce, GuestSetup::CopyOnceNoOffloads, GuestSetup::OvsTso, GuestSetup::Ovs], &rows);
        assert_eq!(sums.len(), 3, "a setup without rows has no summary");
        assert_eq!((sums[0].mbit_s, sums[0].mbit_s_min, sums[0].mbit_s_max), (800.0, 600.0, 900.0));
        assert_eq!((sums[0].vs_ovs_tso, sums[0].vs_no_offloads), (Some(2.0), Some(4.0)));
        let plan = GuestPlan { setups: vec![], repeats: 3, megabytes: 64, cpus: "0".into() };
        assert!(table(&sums, &["ovs-dpdk repeat 1: boom".into()], &plan).contains("failed: ovs-dpdk repeat 1: boom"));
        assert!(GuestSetup::ALL.iter().all(|&s| GuestSetup::parse(s.name()) == Some(s)));
    }
}
