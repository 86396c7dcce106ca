//! The switches under test, started the same way: one pinned poll core,
//! the same memory, vhost-user client ports (the VMs listen, as QEMU does
//! for OVS's dpdkvhostuserclient), the same enqueue retry count.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use testbed::{wait_until, FilePrefix, Proc};
use vswitch::protocol::{Command as Ctl, PmdInfo, PortInfo};

use crate::gen::{PortOpts, Ring};
use crate::harness::{PortLoad, Topology};
use crate::tunnel;

mod ovs;
mod testpmd;

pub use ovs::parse_ovs_pmd_stats;
pub use testpmd::{parse_fwd_stats, FwdTotals};

/// A switch setup compared by the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SwitchKind {
    /// vswitchd, MAC learning, set up as the flavour says.
    Vswitchd(Flavor),
    /// OVS-DPDK, set up as the flavour says.
    Ovs(OvsFlavor),
    /// dpdk-testpmd, io forwarding: a switch that does no work.
    TestpmdIo,
}

/// How OVS-DPDK is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OvsFlavor {
    /// A NORMAL (learning) bridge.
    Normal,
    /// The same with its PMD threads sleeping when idle (OVS 3.1's
    /// `pmd-maxsleep`, `pmd-sleep-max` from 3.2), as long as
    /// `Flavor::CopyOnceSleep`.
    NormalSleep,
    /// Port-to-port OpenFlow rules.
    Flows,
}

/// How vswitchd is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Flavor {
    /// vhost through rte_vhost's enqueue/dequeue.
    RteVhost,
    /// copy-once vhost ports (its own ring walking; zero copy to NICs).
    CopyOnce,
    /// copy-once with `zero_copy = false`: every frame to a NIC copied.
    CopyOnceNoZeroCopy,
    /// copy-once with `pmd_sleep_max_us` (sleeping when idle).
    CopyOnceSleep,
}

/// The idle sleep of `Flavor::CopyOnceSleep` (the README's example).
pub(crate) const SLEEP_MAX_US: u32 = 500;

impl SwitchKind {
    pub const ALL: [SwitchKind; 8] = [
        SwitchKind::Vswitchd(Flavor::RteVhost),
        SwitchKind::Vswitchd(Flavor::CopyOnce),
        SwitchKind::Vswitchd(Flavor::CopyOnceNoZeroCopy),
        SwitchKind::Vswitchd(Flavor::CopyOnceSleep),
        SwitchKind::Ovs(OvsFlavor::Normal),
        SwitchKind::Ovs(OvsFlavor::NormalSleep),
        SwitchKind::Ovs(OvsFlavor::Flows),
        SwitchKind::TestpmdIo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SwitchKind::Vswitchd(Flavor::RteVhost) => "vswitchd",
            SwitchKind::Vswitchd(Flavor::CopyOnce) => "vswitchd-copy-once",
            SwitchKind::Vswitchd(Flavor::CopyOnceNoZeroCopy) => "vswitchd-copy-once-no-zc",
            SwitchKind::Vswitchd(Flavor::CopyOnceSleep) => "vswitchd-copy-once-sleep",
            SwitchKind::Ovs(OvsFlavor::Normal) => "ovs-normal",
            SwitchKind::Ovs(OvsFlavor::NormalSleep) => "ovs-normal-sleep",
            SwitchKind::Ovs(OvsFlavor::Flows) => "ovs-flows",
            SwitchKind::TestpmdIo => "testpmd-io",
        }
    }

    pub fn parse(s: &str) -> Option<SwitchKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether it can be set up as `t` asks (testpmd io has no tunnels).
    pub fn supports(self, t: Topology) -> bool {
        !(self == SwitchKind::TestpmdIo && t == Topology::Vxlan)
    }

    /// Whether it learns MACs (and so needs the learning phase).
    pub fn learns(self) -> bool {
        matches!(self, SwitchKind::Vswitchd(_) | SwitchKind::Ovs(OvsFlavor::Normal | OvsFlavor::NormalSleep))
    }

    /// What the switch does when a VM's receive ring is full, as it was
    /// started with `retries` asked: the setting and its value.
    pub fn retries(self, retries: u32) -> String {
        match self {
            SwitchKind::Vswitchd(_) => format!("{retries} ([switch] vhost_retries)"),
            SwitchKind::Ovs(_) if retries <= OVS_MAX_RETRIES => format!("{retries} (tx-retries-max)"),
            // OVS takes an out-of-range value as its default, silently.
            SwitchKind::Ovs(_) => {
                format!("8 (tx-retries-max={retries} is over OVS's {OVS_MAX_RETRIES}: OVS's default applies)")
            }
            SwitchKind::TestpmdIo if retries == 0 => "0 (set fwd io)".into(),
            SwitchKind::TestpmdIo => format!("{retries} (set fwd io retry; set burst tx delay 0 retry {retries})"),
        }
    }
}

/// OVS's largest `tx-retries-max`; above it OVS falls back to 8.
const OVS_MAX_RETRIES: u32 = 32;

/// VIRTIO_F_RING_PACKED.
const RING_PACKED_BIT: u32 = 34;

/// Resources every switch gets alike.
#[derive(Clone, Debug)]
pub struct Setup {
    pub pmd_core: u32,
    pub main_core: u32,
    pub hugepages: bool,
    pub memory_mb: u32,
    pub vhost_retries: u32,
    pub mac_table_size: usize,
    pub vswitchd: PathBuf,
    /// vswitchd's per-port `offloads` key (false: it negotiates no checksum
    /// or TSO offload with the VMs; the peers' TSO is `PortOpts::tso`).
    pub offloads: bool,
}

/// What the switch itself says about a measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchStats {
    pub cycles_per_packet: Option<f64>,
    /// Busy cycles per packet over each second of the phase, in order
    /// (`busy_totals`; empty where the switch does not say): a phase whose
    /// seconds differ twofold spans two states of the shared machine.
    #[serde(default)]
    pub cycles_by_second: Vec<f64>,
    /// Share of the poll core's cycles spent polling empty queues.
    pub idle_fraction: Option<f64>,
    /// Packets per poll that received any (vswitchd's `show pmd`): small
    /// bursts pay the per-burst work over few packets.
    #[serde(default)]
    pub avg_burst: Option<f64>,
    /// Packets flooded during the phase (None: the switch does not say).
    pub flooded: Option<u64>,
    /// Payload copies per packet on the path the traffic took (VM to VM,
    /// VM to NIC...), from the switch's own counters.
    #[serde(default)]
    pub copies_per_packet: Option<f64>,
    /// Bytes copied per packet on that path (vswitchd's counters): the measure
    /// of copies when a packet is copied in pieces (a TSO segment cut into
    /// frames counts one copy per frame above).
    #[serde(default)]
    pub bytes_copied_per_packet: Option<f64>,
    /// Packets the switch counted as dropped (any reason) in the measured
    /// phase; OVS does not say here.
    #[serde(default)]
    pub dropped: Option<u64>,
    /// vswitchd's non-zero drop counters by reason (`tx_full`, `hdr_*`...),
    /// summed over its ports.
    #[serde(default)]
    pub drops_by_reason: std::collections::BTreeMap<String, u64>,
    /// Packets sent through the NIC of `Topology::DropNic`, and their bytes
    /// (a TSO row's payload, since a segment may leave whole or cut).
    #[serde(default)]
    pub nic_tx: Option<u64>,
    #[serde(default)]
    pub nic_tx_bytes: Option<u64>,
    /// vswitchd's ports, each with what it cost (empty for a peer).
    #[serde(default)]
    pub ports: Vec<PortLoad>,
}

/// A running switch with `n` client ports on `sockets`.
pub struct Running {
    pub kind: SwitchKind,
    pub sockets: Vec<PathBuf>,
    /// Ports as the VMs need them: the MTU, and TSO (OVS with
    /// userspace-tso-enable, testpmd's vhost ports with `tso=1`; vswitchd
    /// offers TSO on every vhost port).
    pub opts: PortOpts,
    pub topology: Topology,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// OVS's underlay bridge's tap, deleted after OVS stopped (fields
    /// drop in order).
    phy: Option<ovs::LinkGuard>,
    _prefix: FilePrefix,
    /// testpmd's totals when the measured phase began.
    testpmd_base: FwdTotals,
    /// OVS's count of packets sent through the dropping NIC then.
    /// The dropping NIC's (packets, bytes) at `begin` (OVS, testpmd).
    nic_base: (u64, u64),
}

pub const START: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!("{:?} {:?} failed: {}", cmd.get_program(), cmd.get_args().collect::<Vec<_>>(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Running {
    /// `opts.tso`: set up to take the VMs' TCP segments whole (HOST_TSO4
    /// offered on every port): vswitchd offers it by default; OVS needs
    /// `other_config:userspace-tso-enable=true` before its ports exist;
    /// testpmd's net_vhost needs `tso=1`. `opts.mtu`: every port's MTU
    /// (vswitchd's `mtu`, OVS's `mtu_request`, testpmd's `--max-pkt-len`).
    pub fn start(kind: SwitchKind, setup: &Setup, n: usize, topology: Topology, flows: u32, opts: PortOpts) -> Result<Running, String> {
        let dir = tempfile::Builder::new().prefix("vsw-bench-").tempdir().map_err(|e| e.to_string())?;
        let sockets: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("vm{i}.sock"))).collect();
        let prefix = FilePrefix::new(kind.name());
        if topology == Topology::DropNic {
            // What the NIC received once: VM 1's addresses.
            let frames: Vec<Vec<u8>> = (0..flows.max(1)).map(|f| crate::frame::announce(1, f)).collect();
            std::fs::write(dir.path().join("nic-rx.pcap"), crate::frame::pcap(&frames)).map_err(|e| e.to_string())?;
        }
        let mut r = Running { kind, sockets, opts, topology, dir, procs: Vec::new(), phy: None, _prefix: prefix, testpmd_base: FwdTotals::default(), nic_base: (0, 0) };
        match kind {
            SwitchKind::Vswitchd(_) => r.start_vswitchd(setup)?,
            SwitchKind::TestpmdIo => r.start_testpmd(setup)?,
            SwitchKind::Ovs(_) => r.start_ovs(setup)?,
        }
        Ok(r)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The VM cabled to a NIC port of the switch, if the topology has one.
    fn nic_vm(&self) -> Option<usize> {
        matches!(self.topology, Topology::Nic | Topology::Vxlan).then(|| self.sockets.len() - 1)
    }

    /// DPDK's vhost PMD as the switch's NIC, client of the VM's socket as
    /// the switches' vhost-user ports are: every switch pays its dequeue
    /// and enqueue alike.
    fn nic_devargs(&self, i: usize) -> String {
        format!("net_vhost{i},iface={},client=1,queues=1", self.sockets[i].display())
    }

    /// The NIC of `Topology::DropNic`: net_pcap with a file to read once
    /// and nothing to write to, so it drops what it sends (net_null would
    /// send as fast, but receives endless packets or none).
    fn drop_nic(&self) -> Option<String> {
        (self.topology == Topology::DropNic).then(|| format!("net_pcap_nic,rx_pcap={}", self.dir().join("nic-rx.pcap").display()))
    }

    /// The NIC's MTU: an underlay carries the tunnel's 50 bytes more.
    fn nic_mtu(&self) -> u16 {
        self.opts.mtu + if self.topology == Topology::Vxlan { tunnel::OUTER_LEN as u16 } else { 0 }
    }

    /// The end of each process's output (and OVS's log), for an error
    /// message: why a peer refused what was asked of it.
    pub fn log_hint(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            let t = p.tail(1200);
            if !t.trim().is_empty() {
                s.push_str(&format!("\n--- {} (last lines):\n{}", p.name(), t.trim_end()));
            }
        }
        if let Ok(log) = std::fs::read_to_string(self.dir().join("ovs-vswitchd.log")) {
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            s.push_str("\n--- ovs-vswitchd.log (last lines):\n");
            s.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        s
    }

    fn start_vswitchd(&mut self, s: &Setup) -> Result<(), String> {
        let mut cfg = format!(
            "[switch]\npmd_cores = [{}]\nmain_core = {}\nhugepages = \"{}\"\nmemory_mb = {}\nvhost_retries = {}\nfdb_size = {}\n\
             eal_args = [\"--file-prefix\", \"{}\"]\ncontrol_socket = \"{}\"\nsocket_dir = \"{}\"\n",
            s.pmd_core,
            s.main_core,
            if s.hugepages { "on" } else { "off" },
            s.memory_mb,
            s.vhost_retries,
            s.mac_table_size.clamp(16, 1 << 20),
            self._prefix.as_str(),
            self.dir().join("ctl.sock").display(),
            self.dir().display()
        );
        match self.kind {
            SwitchKind::Vswitchd(Flavor::CopyOnceNoZeroCopy) => cfg.push_str("zero_copy = false\n"),
            SwitchKind::Vswitchd(Flavor::CopyOnceSleep) => cfg.push_str(&format!("pmd_sleep_max_us = {SLEEP_MAX_US}\n")),
            _ => {}
        }
        // Guests whose frames go to a NIC refuse IN_ORDER (as QEMU does
        // unless asked), so that those frames are lent, not copied.
        let in_order = self.nic_vm().is_none() && self.drop_nic().is_none();
        for (i, sock) in self.sockets.iter().enumerate() {
            let datapath = if self.kind == SwitchKind::Vswitchd(Flavor::RteVhost) { "rte_vhost" } else { "copy-once" };
            if Some(i) == self.nic_vm() {
                cfg.push_str(&format!("[[port]]\nname = \"vm{i}\"\ntype = \"dpdk\"\ndevargs = \"{}\"\nmtu = {}\n", self.nic_devargs(i), self.nic_mtu()));
                continue;
            }
            cfg.push_str(&format!(
                "[[port]]\nname = \"vm{i}\"\ntype = \"vhost-user\"\nmode = \"client\"\npath = \"{}\"\ndatapath = \"{datapath}\"\nmtu = {}\noffloads = {}\nin_order = {in_order}\n",
                sock.display(),
                self.opts.mtu,
                s.offloads
            ));
        }
        if let Some(devargs) = self.drop_nic() {
            cfg.push_str(&format!("[[port]]\nname = \"nic\"\ntype = \"dpdk\"\ndevargs = \"{devargs}\"\nmtu = {}\n", self.opts.mtu));
        }
        if self.topology == Topology::Vxlan {
            let underlay = self.sockets.len() - 1;
            cfg.push_str(&format!(
                "[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = {}\nlocal_ip = \"{}\"\nremote_ips = [\"{}\"]\nunderlay = \"vm{underlay}\"\nmtu = {}\n",
                tunnel::VNI,
                tunnel::SWITCH_IP,
                tunnel::REMOTE_IP,
                self.opts.mtu
            ));
        }
        let path = self.dir().join("vswitchd.toml");
        std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&s.vswitchd);
        cmd.arg("--config").arg(&path);
        let mut p = Proc::spawn("vswitchd", cmd)?;
        p.wait_for("vswitchd: ready", START)?;
        self.procs.push(p);
        Ok(())
    }

    /// Waits until every port has its VM (the VMs are attached by now).
    pub fn wait_connected(&self) -> Result<(), String> {
        match self.kind {
            SwitchKind::Vswitchd(_) => wait_until(START, "vswitchd ports up", || {
                let ports: Vec<PortInfo> = serde_json::from_value(self.ctl(Ctl::ShowPorts).ok()?).ok()?;
                ports.iter().all(|p| p.state == "up").then_some(())
            }),
            SwitchKind::Ovs(_) => wait_until(START, "OVS ports up", || {
                (0..self.sockets.len())
                    .all(|i| self.vsctl(&["get", "Interface", &format!("vm{i}"), "link_state"]).is_ok_and(|s| s.trim() == "up"))
                    .then_some(())
            }),
            SwitchKind::TestpmdIo => {
                let p = self.procs.first().ok_or("testpmd is not running")?;
                wait_until(START, "testpmd's vhost devices ready", || {
                    let out = p.output();
                    self.sockets
                        .iter()
                        .all(|s| out.contains(&format!("({}) virtio is now ready for processing", s.display())))
                        .then_some(())
                })
            }
        }
    }

    fn ctl(&self, c: Ctl) -> Result<serde_json::Value, String> {
        let r = vswitch::ctl_server::request(&self.dir().join("ctl.sock"), c)?;
        if r.ok {
            Ok(r.result)
        } else {
            Err(r.error.unwrap_or_default())
        }
    }

    /// vswitchd: each port's negotiated virtio features, by name.
    pub fn features(&self) -> Option<Vec<Vec<String>>> {
        let ports: Vec<PortInfo> = serde_json::from_value(self.ctl(Ctl::ShowPorts).ok()?).ok()?;
        Some(ports.into_iter().map(|p| p.features).collect())
    }

    /// vswitchd: each port's (tx_bytes, tx_packets), in the order of
    /// `sockets` (None for a peer).
    pub fn port_tx(&self) -> Option<Vec<(u64, u64)>> {
        let ports: Vec<PortInfo> = serde_json::from_value(self.ctl(Ctl::ShowPorts).ok()?).ok()?;
        (0..self.sockets.len()).map(|i| ports.iter().find(|p| p.name == format!("vm{i}")).map(|p| (p.tx_bytes, p.tx_packets))).collect()
    }

    /// Whether every port negotiated the ring layout the VMs offered:
    /// vswitchd says so in `show ports` (features), rte_vhost's log line
    /// `negotiated Virtio features: 0x...` in testpmd's output and OVS's
    /// log. Err when the switch does not say.
    pub fn ring_negotiated(&self) -> Result<Ring, String> {
        let features: Vec<u64> = match self.kind {
            SwitchKind::Vswitchd(_) => {
                let ports = self.features().ok_or("vswitchd did not list its ports' features")?;
                ports.iter().map(|f| if f.iter().any(|n| n == "ring_packed") { 1 << RING_PACKED_BIT } else { 0 }).collect()
            }
            SwitchKind::TestpmdIo | SwitchKind::Ovs(_) => {
                let log = match self.kind {
                    SwitchKind::TestpmdIo => self.procs.first().map(Proc::output).unwrap_or_default(),
                    _ => std::fs::read_to_string(self.dir().join("ovs-vswitchd.log")).unwrap_or_default(),
                };
                self.sockets
                    .iter()
                    .map(|s| negotiated_features(&log, &s.display().to_string()).ok_or(format!("no negotiated features logged for {}", s.display())))
                    .collect::<Result<_, _>>()?
            }
        };
        let packed = features.iter().filter(|&&f| f & (1 << RING_PACKED_BIT) != 0).count();
        match packed {
            0 => Ok(Ring::Split),
            n if n == features.len() => Ok(Ring::Packed),
            n => Err(format!("{n} of {} ports negotiated a packed ring", features.len())),
        }
    }

    /// How many MACs the switch has learned (None: it does not learn).
    pub fn learned(&self) -> Option<usize> {
        match self.kind {
            SwitchKind::Vswitchd(_) => {
                self.ctl(Ctl::ShowFdb).ok().and_then(|v| v.as_array().map(Vec::len))
            }
            SwitchKind::Ovs(OvsFlavor::Normal | OvsFlavor::NormalSleep) => self.appctl(&["fdb/show", "br0"]).ok().map(|s| s.lines().count().saturating_sub(1)),
            _ => None,
        }
    }

    /// vswitchd's PMD threads and their counters.
    fn show_pmd(&self) -> Option<Vec<PmdInfo>> {
        serde_json::from_value(self.ctl(Ctl::ShowPmd).ok()?).ok()
    }

    /// Busy cycles and packets the switch has counted so far (vswitchd's
    /// PMD threads since `begin`; testpmd's forwarding totals), for the
    /// phase's figures by second; None where it does not say (OVS).
    pub fn busy_totals(&mut self) -> Option<(u64, u64)> {
        match self.kind {
            SwitchKind::Vswitchd(_) => {
                Some(self.show_pmd()?.iter().fold((0, 0), |(c, n), p| (c + p.busy_cycles, n + p.packets)))
            }
            SwitchKind::TestpmdIo => self.testpmd_totals().ok().map(|t| (t.cycles, t.packets)),
            SwitchKind::Ovs(_) => None,
        }
    }

    /// Zeroes the switch's counters at the start of a measured phase.
    pub fn begin(&mut self) -> Result<(), String> {
        match self.kind {
            SwitchKind::Vswitchd(_) => {
                self.ctl(Ctl::StatsClear)?;
            }
            SwitchKind::Ovs(_) => {
                self.appctl(&["dpif-netdev/pmd-stats-clear"])?;
                if self.topology == Topology::DropNic {
                    self.nic_base = self.ovs_nic_tx()?;
                }
            }
            SwitchKind::TestpmdIo => {
                self.testpmd_base = self.testpmd_totals()?;
                if self.topology == Topology::DropNic {
                    self.nic_base = self.testpmd_nic_tx()?;
                }
            }
        }
        Ok(())
    }

    /// The switch's own view of the measured phase.
    pub fn end(&mut self) -> SwitchStats {
        match self.kind {
            SwitchKind::Vswitchd(_) => {
                let pmd = self.show_pmd();
                let ports: Option<Vec<PortInfo>> = self.ctl(Ctl::ShowPorts).ok().and_then(|v| serde_json::from_value(v).ok());
                let p = pmd.as_ref().and_then(|v| v.first());
                let copies: Option<vswitch::protocol::CopiesInfo> = self.ctl(Ctl::ShowCopies).ok().and_then(|v| serde_json::from_value(v).ok());
                // The path the measured traffic took (vm-vm, vm-nic, nic-vm).
                let path = copies.and_then(|c| c.paths.into_iter().max_by_key(|p| p.packets));
                let mut drops_by_reason = std::collections::BTreeMap::new();
                for (k, &v) in ports.iter().flatten().flat_map(|p| p.drops.iter()).filter(|(_, &v)| v > 0) {
                    *drops_by_reason.entry(k.clone()).or_insert(0) += v;
                }
                let path = path.filter(|p| p.packets > 0);
                SwitchStats {
                    drops_by_reason,
                    bytes_copied_per_packet: path.as_ref().map(|p| p.bytes_copied as f64 / p.packets as f64),
                    copies_per_packet: path.map(|p| p.payload_copies as f64 / p.packets as f64),
                    cycles_per_packet: p.map(|p| p.cycles_per_packet),
                    nic_tx: ports.as_ref().and_then(|ps| ps.iter().find(|p| p.name == "nic")).map(|p| p.tx_packets),
                    nic_tx_bytes: ports.as_ref().and_then(|ps| ps.iter().find(|p| p.name == "nic")).map(|p| p.tx_bytes),
                    idle_fraction: p.map(|p| p.idle_cycles as f64 / (p.idle_cycles + p.busy_cycles).max(1) as f64),
                    avg_burst: p.map(|p| p.avg_burst),
                    flooded: ports.as_ref().map(|ps| ps.iter().map(|p| p.flooded).sum()),
                    dropped: ports.as_ref().map(|ps| ps.iter().flat_map(|p| p.drops.values()).sum()),
                    ports: ports.into_iter().flatten().map(PortLoad::of).collect(),
                    // The caller's, who reads them during the phase.
                    cycles_by_second: Vec::new(),
                }
            }
            SwitchKind::Ovs(_) => {
                let text = self.appctl(&["dpif-netdev/pmd-stats-show"]).unwrap_or_default();
                keep_raw("ovs pmd-stats-show", &text);
                let s = parse_ovs_pmd_stats(&text);
                let nic = match self.topology {
                    Topology::DropNic => self.ovs_nic_tx().ok().map(|n| self.since_begin(n)),
                    _ => None,
                };
                SwitchStats { flooded: None, nic_tx: nic.map(|n| n.0), nic_tx_bytes: nic.map(|n| n.1), ..s }
            }
            SwitchKind::TestpmdIo => match self.testpmd_totals() {
                Ok(t) => {
                    let nic = (self.topology == Topology::DropNic).then(|| self.testpmd_nic_tx().ok()).flatten().map(|n| self.since_begin(n));
                    SwitchStats { nic_tx_bytes: nic.map(|n| n.1), ..t.since(&self.testpmd_base) }
                }
                Err(e) => {
                    eprintln!("vswitch-bench: {e}");
                    SwitchStats::default()
                }
            },
        }
    }

    /// Time the switch's processes have run on a CPU so far, in
    /// nanoseconds: the scheduler's own count per thread
    /// (/proc/PID/task/TID/schedstat), exact where /proc/PID/stat's
    /// utime and stime are sampled at each timer tick, which overcounts a
    /// thread that wakes from a timer (it runs as the tick lands).
    pub fn cpu_ns(&self) -> Result<u64, String> {
        self.procs.iter().map(|p| proc_cpu_ns(p.pid())).sum()
    }

    /// The dropping NIC's (packets, bytes) since `begin`.
    fn since_begin(&self, (pkts, bytes): (u64, u64)) -> (u64, u64) {
        (pkts.saturating_sub(self.nic_base.0), bytes.saturating_sub(self.nic_base.1))
    }

    /// Stops the switch, each process its own way.
    pub fn stop(mut self) {
        if self.kind == SwitchKind::TestpmdIo {
            self.quit_testpmd();
        }
        if let Some(p) = self.procs.iter_mut().find(|p| p.name() == "vswitchd") {
            let _ = p.signal_and_wait(signal_hook::consts::SIGTERM, Duration::from_secs(20));
        }
        // ovs-vswitchd before ovsdb-server: reverse start order.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

/// The on-CPU time of every thread of a process (the first field of each
/// thread's schedstat), in nanoseconds.
fn proc_cpu_ns(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut ns = 0;
    for t in tasks.flatten() {
        // A thread that ended meanwhile has no file left: it counts 0.
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else { continue };
        ns += s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()).ok_or(format!("{}: {s:?}", t.path().display()))?;
    }
    Ok(ns)
}

/// With `VSW_BENCH_RAW=FILE`, appends the peers' raw output there (how the
/// parser tests' samples were taken).
fn keep_raw(what: &str, text: &str) {
    if let Some(path) = std::env::var_os("VSW_BENCH_RAW") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "=== {what}\n{text}");
        }
    }
}

/// The features rte_vhost last logged as negotiated for `socket`
/// (`VHOST_CONFIG: (SOCKET) negotiated Virtio features: 0x...`).
pub fn negotiated_features(log: &str, socket: &str) -> Option<u64> {
    let tag = format!("({socket}) negotiated Virtio features: 0x");
    log.lines().rev().find_map(|l| {
        let hex = l.split_once(&tag)?.1.trim();
        u64::from_str_radix(hex.split_whitespace().next()?, 16).ok()
    })
}

