//! dpdk-testpmd as a peer: io forwarding between net_vhost ports, driven
//! through its interactive prompt so that each measured phase gets its own
//! figures (`show fwd stats all` before and after, differenced) and the
//! same enqueue retries as the switches (`set fwd io retry`).
use std::process::Command;
use std::time::Duration;

use testbed::Proc;

use super::{keep_raw, Running, Setup, SwitchStats, START};

/// testpmd's forwarding totals since it started forwarding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdTotals {
    /// Cycles the forwarding core spent on bursts that received packets.
    pub cycles: u64,
    pub packets: u64,
    /// RX-dropped plus TX-dropped over all ports.
    pub dropped: u64,
    /// TX-packets over all ports.
    pub tx_packets: u64,
}

impl FwdTotals {
    /// The phase between `earlier` and these totals.
    pub fn since(&self, earlier: &FwdTotals) -> SwitchStats {
        let packets = self.packets.saturating_sub(earlier.packets);
        SwitchStats {
            cycles_per_packet: (packets > 0).then(|| self.cycles.saturating_sub(earlier.cycles) as f64 / packets as f64),
            dropped: Some(self.dropped.saturating_sub(earlier.dropped)),
            // With a dropping NIC only the NIC sends (the VMs' ports get
            // nothing to send): all ports' TX is the NIC's.
            nic_tx: Some(self.tx_packets.saturating_sub(earlier.tx_packets)),
            ..Default::default()
        }
    }
}

/// Reads the "Accumulated forward statistics" block of `show fwd stats
/// all` (or of `stop`): the RX-/TX-dropped sums and the `total cycles=C /
/// total io packets=P` of `--record-core-cycles` (absent while nothing
/// was forwarded: zero). None without the block.
pub fn parse_fwd_stats(text: &str) -> Option<FwdTotals> {
    let (_, block) = text.split_once("Accumulated forward statistics")?;
    // The number right after `name` ("packets=985248)": up to the first non-digit).
    let after = |hay: &str, name: &str| -> Option<u64> {
        let rest = hay.split_once(name)?.1.trim_start();
        rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
    };
    let dropped = after(block, "RX-dropped:")? + after(block, "TX-dropped:")?;
    let cycles = after(block, "total cycles=").unwrap_or(0);
    let packets = block.split_once("total cycles=").and_then(|(_, rest)| after(rest, "packets=")).unwrap_or(0);
    let tx_packets = after(block, "TX-packets:")?;
    Some(FwdTotals { cycles, packets, dropped, tx_packets })
}

/// "TX-packets: N TX-errors: E TX-bytes: B" of `show port stats`.
fn parse_port_tx(text: &str) -> Option<(u64, u64)> {
    let after = |name: &str| -> Option<u64> { text.rsplit_once(name)?.1.split_whitespace().next()?.parse().ok() };
    Some((after("TX-packets:")?, after("TX-bytes:")?))
}

impl Running {
    pub(super) fn start_testpmd(&mut self, s: &Setup) -> Result<(), String> {
        // Line-buffered: its statistics reach the pipe as each is printed,
        // not when testpmd exits.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "dpdk-testpmd"]);
        cmd.args(["--lcores", &format!("0@{},1@{}", s.main_core, s.pmd_core), "--file-prefix", self._prefix.as_str(), "--no-pci"]);
        if s.hugepages {
            cmd.args(["--socket-mem", &s.memory_mb.to_string()]);
        } else {
            cmd.args(["--no-huge", "-m", &s.memory_mb.to_string()]);
        }
        // tso=1 offers HOST_TSO4/6 (net_vhost's default withdraws them);
        // without linear-buffer, a 64 KB segment lands in an mbuf chain.
        let tso = if self.opts.tso { ",tso=1" } else { "" };
        for (i, sock) in self.sockets.iter().enumerate() {
            cmd.arg("--vdev").arg(format!("net_vhost{i},iface={},client=1,queues=1{tso}", sock.display()));
        }
        if let Some(devargs) = self.drop_nic() {
            cmd.arg("--vdev").arg(devargs);
        }
        cmd.args(["--", "-i", "--forward-mode=io", "--port-topology=chained", "--nb-cores=1"])
            .args(["--total-num-mbufs=32768", "--record-core-cycles", "--rxd=1024", "--txd=1024"]);
        if self.opts.mtu > 1500 {
            // The MTU plus Ethernet header and CRC, as testpmd counts; the
            // frames are dequeued into chains of its 2 KB mbufs.
            cmd.arg(format!("--max-pkt-len={}", self.opts.mtu as u32 + 18));
        }
        let mut p = Proc::spawn("testpmd", cmd)?;
        p.wait_for("testpmd> ", START)?;
        // Retries as vswitchd's and OVS's: tx_burst again at once, up to
        // `vhost_retries` times, while the guest's ring is full.
        let mark = p.output_len();
        let fwd = if s.vhost_retries > 0 { format!("set fwd io retry\nset burst tx delay 0 retry {}\n", s.vhost_retries) } else { "set fwd io\n".into() };
        p.write_stdin(&format!("{fwd}start\n"))?;
        p.wait_for_after(mark, "nb forwarding cores=", START)?;
        self.procs.push(p);
        Ok(())
    }

    /// testpmd's totals so far (`show fwd stats all`).
    pub(super) fn testpmd_totals(&mut self) -> Result<FwdTotals, String> {
        let p = self.procs.first_mut().ok_or("testpmd is not running")?;
        let mark = p.output_len();
        p.write_stdin("show fwd stats all\n")?;
        let wait = Duration::from_secs(10);
        let head = p.wait_for_after(mark, "Accumulated forward statistics", wait)?;
        // The prompt comes back once the whole block has been printed.
        let rest = p.wait_for_after(mark + head.len(), "testpmd> ", wait)?;
        let text = head + &rest;
        keep_raw("testpmd show fwd stats all", &text);
        parse_fwd_stats(&text).ok_or_else(|| format!("testpmd printed no forward statistics:\n{text}"))
    }

    /// (TX-packets, TX-bytes) of the dropping NIC, the port after the
    /// vhost ones (`show port stats`).
    pub(super) fn testpmd_nic_tx(&mut self) -> Result<(u64, u64), String> {
        let nic = self.sockets.len();
        let p = self.procs.first_mut().ok_or("testpmd is not running")?;
        let mark = p.output_len();
        p.write_stdin(&format!("show port stats {nic}\n"))?;
        let text = p.wait_for_after(mark, "TX-bytes:", Duration::from_secs(10))?;
        let rest = p.wait_for_after(mark + text.len(), "\n", Duration::from_secs(10))?;
        parse_port_tx(&(text + &rest)).ok_or_else(|| format!("testpmd printed no port statistics for port {nic}"))
    }

    /// Asks testpmd to stop forwarding and quit.
    pub(super) fn quit_testpmd(&mut self) {
        if let Some(p) = self.procs.first_mut() {
            let mark = p.output_len();
            if p.write_stdin("stop\nquit\n").is_ok() {
                let _ = p.wait_for_after(mark, "Bye", Duration::from_secs(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_the_difference_of_two_snapshots() {
        let start = parse_fwd_stats(
            "  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n  \
             RX-packets: 0 RX-dropped: 0 RX-total: 0\n  TX-packets: 0 TX-dropped: 0 TX-total: 0\n  ++++++++\n",
        )
        .unwrap();
        assert_eq!(start, FwdTotals::default(), "no cycles line before anything was forwarded");
        let end = parse_fwd_stats(
            "  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n  \
             RX-packets: 4 RX-dropped: 1 RX-total: 4\n  TX-packets: 2 TX-dropped: 2 TX-total: 4\n  ++++++++\n\n  \
             CPU cycles/packet=250.00 (total cycles=1000 / total io packets=4) at 2600 MHz Clock\ntestpmd> ",
        )
        .unwrap();
        assert_eq!(end, FwdTotals { cycles: 1000, packets: 4, dropped: 3, tx_packets: 2 });
        let s = end.since(&start);
        assert_eq!((s.cycles_per_packet, s.dropped, s.nic_tx), (Some(250.0), Some(3), Some(2)));
        assert_eq!(start.since(&start).cycles_per_packet, None);
        assert_eq!(parse_fwd_stats("testpmd> "), None);
    }

    #[test]
    fn a_ports_tx_counters_are_read_from_show_port_stats() {
        let text = "  ######################## NIC statistics for port 2  ########################\n  \
                    RX-packets: 0          RX-missed: 0          RX-bytes:  0\n  RX-errors: 0\n  RX-nombuf:  0\n  \
                    TX-packets: 1234       TX-errors: 0          TX-bytes:  80470276\n";
        assert_eq!(parse_port_tx(text), Some((1234, 80470276)));
        assert_eq!(parse_port_tx("testpmd> "), None);
    }
}
