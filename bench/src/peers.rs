//! The switches under test, started the same way: one pinned poll core,
//! the same memory, vhost-user client ports (the VMs listen, as QEMU does
//! for OVS's dpdkvhostuserclient), the same enqueue retry count.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use testbed::{wait_until, FilePrefix, Proc};
use vswitch::protocol::{Command as Ctl, PmdInfo, PortInfo};

/// A switch setup compared by the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SwitchKind {
    /// vswitchd, MAC learning, vhost through rte_vhost's enqueue/dequeue.
    Vswitchd,
    /// vswitchd, MAC learning, copy-once vhost ports (its own ring walking).
    VswitchdCopyOnce,
    /// OVS-DPDK, a NORMAL (learning) bridge.
    OvsNormal,
    /// OVS-DPDK, port-to-port OpenFlow rules.
    OvsFlows,
    /// dpdk-testpmd, io forwarding: a switch that does no work.
    TestpmdIo,
}

impl SwitchKind {
    pub const ALL: [SwitchKind; 5] =
        [SwitchKind::Vswitchd, SwitchKind::VswitchdCopyOnce, SwitchKind::OvsNormal, SwitchKind::OvsFlows, SwitchKind::TestpmdIo];

    pub fn name(self) -> &'static str {
        match self {
            SwitchKind::Vswitchd => "vswitchd",
            SwitchKind::VswitchdCopyOnce => "vswitchd-copy-once",
            SwitchKind::OvsNormal => "ovs-normal",
            SwitchKind::OvsFlows => "ovs-flows",
            SwitchKind::TestpmdIo => "testpmd-io",
        }
    }

    pub fn parse(s: &str) -> Option<SwitchKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether it learns MACs (and so needs the learning phase).
    pub fn learns(self) -> bool {
        matches!(self, SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce | SwitchKind::OvsNormal)
    }
}

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
}

/// What the switch itself says about a measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchStats {
    pub cycles_per_packet: Option<f64>,
    /// Share of the poll core's cycles spent polling empty queues.
    pub idle_fraction: Option<f64>,
    /// Packets flooded during the phase (None: the switch does not say).
    pub flooded: Option<u64>,
    /// Payload copies per VM-to-VM packet, from the switch's own counters.
    #[serde(default)]
    pub copies_per_packet: Option<f64>,
    /// Bytes copied per VM-to-VM packet (vswitchd's counters): the measure
    /// of copies when a packet is copied in pieces (a TSO segment cut into
    /// frames counts one copy per frame above).
    #[serde(default)]
    pub bytes_copied_per_packet: Option<f64>,
    /// Packets the switch counted as dropped (any reason). vswitchd's cover
    /// the measured phase; testpmd's its whole run; OVS does not say here.
    #[serde(default)]
    pub dropped: Option<u64>,
    /// vswitchd's non-zero drop counters by reason (`tx_full`, `hdr_*`...),
    /// summed over its ports.
    #[serde(default)]
    pub drops_by_reason: std::collections::BTreeMap<String, u64>,
}

/// A running switch with `n` client ports on `sockets`.
pub struct Running {
    pub kind: SwitchKind,
    pub sockets: Vec<PathBuf>,
    /// Set up for TSO: OVS with userspace-tso-enable, testpmd's vhost
    /// ports with `tso=1` (vswitchd offers TSO on every vhost port).
    pub tso: bool,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    _prefix: FilePrefix,
}

const START: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!("{:?} {:?} failed: {}", cmd.get_program(), cmd.get_args().collect::<Vec<_>>(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Running {
    /// `tso`: set up to take the VMs' TCP segments whole (HOST_TSO4 offered
    /// on every port): vswitchd offers it by default; OVS needs
    /// `other_config:userspace-tso-enable=true` before its ports exist;
    /// testpmd's net_vhost needs `tso=1`.
    pub fn start(kind: SwitchKind, setup: &Setup, n: usize, tso: bool) -> Result<Running, String> {
        let dir = tempfile::Builder::new().prefix("vsw-bench-").tempdir().map_err(|e| e.to_string())?;
        let sockets: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("vm{i}.sock"))).collect();
        let prefix = FilePrefix::new(kind.name());
        let mut r = Running { kind, sockets, tso, dir, procs: Vec::new(), _prefix: prefix };
        match kind {
            SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => r.start_vswitchd(setup)?,
            SwitchKind::TestpmdIo => r.start_testpmd(setup)?,
            SwitchKind::OvsNormal | SwitchKind::OvsFlows => r.start_ovs(setup)?,
        }
        Ok(r)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
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
        for (i, sock) in self.sockets.iter().enumerate() {
            let datapath = if self.kind == SwitchKind::VswitchdCopyOnce { "copy-once" } else { "rte_vhost" };
            cfg.push_str(&format!(
                "[[port]]\nname = \"vm{i}\"\ntype = \"vhost-user\"\nmode = \"client\"\npath = \"{}\"\ndatapath = \"{datapath}\"\n",
                sock.display()
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

    fn start_testpmd(&mut self, s: &Setup) -> Result<(), String> {
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args(["--lcores", &format!("0@{},1@{}", s.main_core, s.pmd_core), "--file-prefix", self._prefix.as_str(), "--no-pci"]);
        if s.hugepages {
            cmd.args(["--socket-mem", &s.memory_mb.to_string()]);
        } else {
            cmd.args(["--no-huge", "-m", &s.memory_mb.to_string()]);
        }
        // tso=1 offers HOST_TSO4/6 (net_vhost's default withdraws them);
        // without linear-buffer, a 64 KB segment lands in an mbuf chain.
        let tso = if self.tso { ",tso=1" } else { "" };
        for (i, sock) in self.sockets.iter().enumerate() {
            cmd.arg("--vdev").arg(format!("net_vhost{i},iface={},client=1,queues=1{tso}", sock.display()));
        }
        // testpmd's io mode has no enqueue retry of its own: stated in the output.
        cmd.args(["--", "--forward-mode=io", "--port-topology=chained", "--auto-start", "--nb-cores=1"])
            .args(["--total-num-mbufs=32768", "--record-core-cycles", "--rxd=1024", "--txd=1024"]);
        let mut p = Proc::spawn("testpmd", cmd)?;
        p.wait_for("Auto-start selected", START)?;
        self.procs.push(p);
        Ok(())
    }

    fn ovs_ctl(&self) -> PathBuf {
        self.dir().join("ovs-vswitchd.ctl")
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ovs-vsctl").arg(format!("--db=unix:{}", self.dir().join("db.sock").display())).args(args))
    }

    fn appctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ovs-appctl").arg("-t").arg(self.ovs_ctl()).args(args))
    }

    fn start_ovs(&mut self, s: &Setup) -> Result<(), String> {
        let d = self.dir().to_path_buf();
        let db = d.join("conf.db");
        run(Command::new("ovsdb-tool").arg("create").arg(&db).arg("/usr/share/openvswitch/vswitch.ovsschema"))?;
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(&db)
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg(format!("--unixctl={}", d.join("ovsdb.ctl").display()))
            .env("OVS_RUNDIR", &d)
            .env("OVS_LOGDIR", &d);
        self.procs.push(Proc::spawn("ovsdb-server", cmd)?);
        wait_until(START, "ovsdb-server's socket", || d.join("db.sock").exists().then_some(()))?;
        self.vsctl(&["--no-wait", "init"])?;
        let mem = if s.hugepages {
            format!("--socket-mem={}", s.memory_mb)
        } else {
            format!("--no-huge -m {}", s.memory_mb)
        };
        let extra = format!("--file-prefix={} --no-pci {mem}", self._prefix.as_str());
        let mut config = vec![
            "other_config:dpdk-init=true".to_string(),
            format!("other_config:pmd-cpu-mask={:#x}", 1u64 << s.pmd_core),
            format!("other_config:dpdk-lcore-mask={:#x}", 1u64 << s.main_core),
            format!("other_config:dpdk-extra=\"{extra}\""),
        ];
        if self.tso {
            // Read once, at start: it must be there before the bridge and
            // its ports are.
            config.push("other_config:userspace-tso-enable=true".into());
        }
        let mut args = vec!["--no-wait", "set", "Open_vSwitch", "."];
        args.extend(config.iter().map(String::as_str));
        self.vsctl(&args)?;
        let mut cmd = Command::new("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk");
        cmd.arg(format!("unix:{}", d.join("db.sock").display()))
            .arg(format!("--unixctl={}", self.ovs_ctl().display()))
            .arg("--log-file=".to_string() + &d.join("ovs-vswitchd.log").display().to_string())
            .env("OVS_RUNDIR", &d)
            .env("OVS_LOGDIR", &d)
            .env("OVS_DBDIR", &d);
        let p = Proc::spawn("ovs-vswitchd", cmd)?;
        wait_until(START, "ovs-vswitchd's control socket", || self.ovs_ctl().exists().then_some(()))
            .map_err(|e| format!("{e}\n{}", p.tail(3000)))?;
        self.procs.push(p);
        self.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
            &format!("other-config:mac-table-size={}", s.mac_table_size.max(2048)),
        ])?;
        for (i, sock) in self.sockets.clone().iter().enumerate() {
            let name = format!("vm{i}");
            self.vsctl(&[
                "add-port",
                "br0",
                &name,
                "--",
                "set",
                "Interface",
                &name,
                "type=dpdkvhostuserclient",
                &format!("options:vhost-server-path={}", sock.display()),
                &format!("options:tx-retries-max={}", s.vhost_retries),
                &format!("ofport_request={}", i + 1),
            ])?;
        }
        if self.kind == SwitchKind::OvsFlows {
            run(Command::new("ovs-ofctl").arg("del-flows").arg(self.bridge_target()))?;
            let n = self.sockets.len();
            for i in 0..n {
                // Port to port, as the generator's streams go: i -> i+1 (a
                // ring; with two VMs, both directions).
                let flow = format!("in_port={},actions=output:{}", i + 1, (i + 1) % n + 1);
                run(Command::new("ovs-ofctl").arg("add-flow").arg(self.bridge_target()).arg(flow))?;
            }
        }
        Ok(())
    }

    fn bridge_target(&self) -> String {
        format!("unix:{}", self.dir().join("br0.mgmt").display())
    }

    /// Waits until every port has its VM (the VMs are attached by now).
    pub fn wait_connected(&self) -> Result<(), String> {
        match self.kind {
            SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => wait_until(START, "vswitchd ports up", || {
                let ports: Vec<PortInfo> = serde_json::from_value(self.ctl(Ctl::ShowPorts).ok()?).ok()?;
                ports.iter().all(|p| p.state == "up").then_some(())
            }),
            SwitchKind::OvsNormal | SwitchKind::OvsFlows => wait_until(START, "OVS ports up", || {
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

    /// How many MACs the switch has learned (None: it does not learn).
    pub fn learned(&self) -> Option<usize> {
        match self.kind {
            SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => {
                self.ctl(Ctl::ShowFdb).ok().and_then(|v| v.as_array().map(Vec::len))
            }
            SwitchKind::OvsNormal => self.appctl(&["fdb/show", "br0"]).ok().map(|s| s.lines().count().saturating_sub(1)),
            _ => None,
        }
    }

    /// Zeroes the switch's counters at the start of a measured phase.
    pub fn begin(&mut self) -> Result<(), String> {
        match self.kind {
            SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => {
                self.ctl(Ctl::StatsClear)?;
            }
            SwitchKind::OvsNormal | SwitchKind::OvsFlows => {
                self.appctl(&["dpif-netdev/pmd-stats-clear"])?;
            }
            SwitchKind::TestpmdIo => {}
        }
        Ok(())
    }

    /// The switch's own view of the measured phase. testpmd reports only
    /// when it exits: its figures come from `stop`.
    pub fn end(&mut self) -> SwitchStats {
        match self.kind {
            SwitchKind::Vswitchd | SwitchKind::VswitchdCopyOnce => {
                let pmd: Option<Vec<PmdInfo>> = self.ctl(Ctl::ShowPmd).ok().and_then(|v| serde_json::from_value(v).ok());
                let ports: Option<Vec<PortInfo>> = self.ctl(Ctl::ShowPorts).ok().and_then(|v| serde_json::from_value(v).ok());
                let p = pmd.as_ref().and_then(|v| v.first());
                let copies: Option<vswitch::protocol::CopiesInfo> = self.ctl(Ctl::ShowCopies).ok().and_then(|v| serde_json::from_value(v).ok());
                let vm_vm = copies.and_then(|c| c.paths.into_iter().find(|p| p.path == "vm-vm"));
                let mut drops_by_reason = std::collections::BTreeMap::new();
                for (k, &v) in ports.iter().flatten().flat_map(|p| p.drops.iter()).filter(|(_, &v)| v > 0) {
                    *drops_by_reason.entry(k.clone()).or_insert(0) += v;
                }
                let vm_vm = vm_vm.filter(|p| p.packets > 0);
                SwitchStats {
                    drops_by_reason,
                    bytes_copied_per_packet: vm_vm.as_ref().map(|p| p.bytes_copied as f64 / p.packets as f64),
                    copies_per_packet: vm_vm.map(|p| p.payload_copies as f64 / p.packets as f64),
                    cycles_per_packet: p.map(|p| p.cycles_per_packet),
                    idle_fraction: p.map(|p| p.idle_cycles as f64 / (p.idle_cycles + p.busy_cycles).max(1) as f64),
                    flooded: ports.as_ref().map(|ps| ps.iter().map(|p| p.flooded).sum()),
                    dropped: ports.map(|ps| ps.iter().flat_map(|p| p.drops.values()).sum()),
                }
            }
            SwitchKind::OvsNormal | SwitchKind::OvsFlows => {
                let text = self.appctl(&["dpif-netdev/pmd-stats-show"]).unwrap_or_default();
                keep_raw("ovs pmd-stats-show", &text);
                let s = parse_ovs_pmd_stats(&text);
                SwitchStats { flooded: None, ..s }
            }
            SwitchKind::TestpmdIo => SwitchStats::default(),
        }
    }

    /// Stops the switch; testpmd prints its totals on the way out.
    pub fn stop(mut self) -> SwitchStats {
        let mut stats = SwitchStats::default();
        if self.kind == SwitchKind::TestpmdIo {
            if let Some(p) = self.procs.first_mut() {
                let mark = p.output_len();
                let _ = p.write_stdin("\n");
                if let Ok(text) = p.wait_for_after(mark, "Bye", Duration::from_secs(20)) {
                    keep_raw("testpmd exit", &text);
                    stats = parse_testpmd_exit(&text);
                }
            }
        }
        if let Some(p) = self.procs.iter_mut().find(|p| p.name() == "vswitchd") {
            let _ = p.signal_and_wait(signal_hook::consts::SIGTERM, Duration::from_secs(20));
        }
        // ovs-vswitchd before ovsdb-server: reverse start order.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
        stats
    }
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

/// Reads `dpif-netdev/pmd-stats-show`: cycles per packet and idle share.
pub fn parse_ovs_pmd_stats(text: &str) -> SwitchStats {
    let num = |line: &str| line.split(':').nth(1)?.split_whitespace().next()?.parse::<f64>().ok();
    let mut s = SwitchStats::default();
    let (mut idle, mut busy) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with("avg processing cycles per packet") {
            s.cycles_per_packet = num(line);
        } else if line.starts_with("idle cycles") {
            idle = num(line);
        } else if line.starts_with("processing cycles") {
            busy = num(line);
        }
    }
    if let (Some(i), Some(b)) = (idle, busy) {
        s.idle_fraction = Some(i / (i + b).max(1.0));
    }
    s
}

/// Reads testpmd's exit statistics: `CPU cycles/packet=...` and the
/// RX-/TX-dropped of the "Accumulated forward statistics" block.
pub fn parse_testpmd_exit(text: &str) -> SwitchStats {
    let cpp = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("CPU cycles/packet=").and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok()));
    let dropped = text.split_once("Accumulated forward statistics").and_then(|(_, block)| {
        let field = |name: &str| -> Option<u64> {
            let after = block.split_once(name)?.1;
            after.split_whitespace().next()?.parse().ok()
        };
        Some(field("RX-dropped:")? + field("TX-dropped:")?)
    });
    SwitchStats { cycles_per_packet: cpp, dropped, ..Default::default() }
}
