//! OVS-DPDK as a peer: its own ovsdb in the run's directory, a netdev
//! bridge (NORMAL or port-to-port flows), dpdkvhostuserclient ports.
use std::path::PathBuf;
use std::process::Command;

use testbed::{wait_until, Proc};

use super::{run, OvsFlavor, Running, Setup, SwitchKind, SwitchStats, START};
use crate::harness::Topology;
use crate::tunnel;

/// The underlay bridge of the VXLAN topology: OVS's guides call it br-phy,
/// which a host running OVS may well have; this name is the bench's own.
const PHY_BRIDGE: &str = "vswb-phy";

/// A kernel link OVS made for the run (a netdev bridge's internal port is
/// a tap, which outlives OVS): deleted when the run ends, however it ends.
pub(super) struct LinkGuard(&'static str);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["link", "del", self.0]));
    }
}

impl Running {
    pub(super) fn ovs_ctl(&self) -> PathBuf {
        self.dir().join("ovs-vswitchd.ctl")
    }

    pub(super) fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ovs-vsctl").arg(format!("--db=unix:{}", self.dir().join("db.sock").display())).args(args))
    }

    pub(super) fn appctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ovs-appctl").arg("-t").arg(self.ovs_ctl()).args(args))
    }

    pub(super) fn start_ovs(&mut self, s: &Setup) -> Result<(), String> {
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
        if self.kind == SwitchKind::Ovs(OvsFlavor::NormalSleep) {
            config.push(format!("other_config:pmd-maxsleep={}", super::SLEEP_MAX_US));
        }
        if self.opts.tso {
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
            if Some(i) == self.nic_vm() {
                self.add_nic(i)?;
                continue;
            }
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
                &format!("mtu_request={}", self.opts.mtu),
                &format!("ofport_request={}", i + 1),
            ])?;
        }
        if let Some(devargs) = self.drop_nic() {
            let n = self.sockets.len() + 1;
            let (devargs, mtu, ofport) = (format!("options:dpdk-devargs={devargs}"), format!("mtu_request={}", self.opts.mtu), format!("ofport_request={n}"));
            self.vsctl(&["add-port", "br0", "nic", "--", "set", "Interface", "nic", "type=dpdk", &devargs, &mtu, &ofport])?;
        }
        if self.kind == SwitchKind::Ovs(OvsFlavor::Flows) {
            run(Command::new("ovs-ofctl").arg("del-flows").arg(self.bridge_target()))?;
            let n = self.sockets.len() + usize::from(self.drop_nic().is_some());
            for i in 0..n {
                // Port to port, as the generator's streams go: i -> i+1 (a
                // ring; with two VMs, both directions).
                let flow = format!("in_port={},actions=output:{}", i + 1, (i + 1) % n + 1);
                run(Command::new("ovs-ofctl").arg("add-flow").arg(self.bridge_target()).arg(flow))?;
            }
        }
        Ok(())
    }

    /// The NIC port: on br0, or with a VXLAN topology on its own bridge
    /// `PHY_BRIDGE` whose internal port holds the tunnel address (OVS's
    /// userspace tunnelling: the kernel side of that port gives the route,
    /// the neighbour is set as an operator would pin it), with the tunnel
    /// port on br0 in the NIC's OpenFlow port number.
    fn add_nic(&mut self, i: usize) -> Result<(), String> {
        let (name, devargs, mtu) = (format!("vm{i}"), format!("options:dpdk-devargs={}", self.nic_devargs(i)), format!("mtu_request={}", self.nic_mtu()));
        let ofport = format!("ofport_request={}", i + 1);
        if self.topology != Topology::Vxlan {
            return self.vsctl(&["add-port", "br0", &name, "--", "set", "Interface", &name, "type=dpdk", &devargs, &mtu, &ofport]).map(drop);
        }
        self.vsctl(&["add-br", PHY_BRIDGE, "--", "set", "bridge", PHY_BRIDGE, "datapath_type=netdev"])?;
        self.phy = Some(LinkGuard(PHY_BRIDGE));
        self.vsctl(&["add-port", PHY_BRIDGE, &name, "--", "set", "Interface", &name, "type=dpdk", &devargs, &mtu])?;
        let (local, remote) = (tunnel::SWITCH_IP.to_string(), tunnel::REMOTE_IP.to_string());
        self.vsctl(&[
            "add-port",
            "br0",
            "vx0",
            "--",
            "set",
            "Interface",
            "vx0",
            "type=vxlan",
            &format!("options:remote_ip={remote}"),
            &format!("options:local_ip={local}"),
            &format!("options:key={}", tunnel::VNI),
            &ofport,
        ])?;
        run(Command::new("ip").args(["addr", "replace", &format!("{local}/24"), "dev", PHY_BRIDGE]))?;
        run(Command::new("ip").args(["link", "set", PHY_BRIDGE, "up"]))?;
        let mac = tunnel::REMOTE_MAC.map(|b| format!("{b:02x}")).join(":");
        self.appctl(&["tnl/arp/set", PHY_BRIDGE, &remote, &mac]).map(drop)
    }

    /// (Packets, bytes) OVS sent through the dropping NIC so far, as the
    /// datapath counts them now (the database's statistics lag by seconds).
    pub(super) fn ovs_nic_tx(&self) -> Result<(u64, u64), String> {
        let port = (self.sockets.len() + 1).to_string();
        let out = run(Command::new("ovs-ofctl").args(["-O", "OpenFlow13", "dump-ports"]).arg(self.bridge_target()).arg(&port))?;
        parse_dump_ports_tx(&out).ok_or_else(|| format!("no tx pkts and bytes in ovs-ofctl dump-ports: {out}"))
    }

    fn bridge_target(&self) -> String {
        format!("unix:{}", self.dir().join("br0.mgmt").display())
    }
}

/// The tx line of `ovs-ofctl dump-ports`: "tx pkts=N, bytes=M, ...".
fn parse_dump_ports_tx(out: &str) -> Option<(u64, u64)> {
    let num = |r: &str| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
    let (_, tx) = out.split_once("tx pkts=")?;
    Some((num(tx)?, num(tx.split_once("bytes=")?.1)?))
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_tx_counters_of_dump_ports() {
        let out = "OFPST_PORT reply (OF1.3) (xid=0x2): 1 ports\n  port  3: rx pkts=7, bytes=420, drop=0, errs=0, frame=0, over=0, crc=0\n           tx pkts=1234, bytes=80470276, drop=0, errs=0, coll=0\n           duration=12.345s\n";
        assert_eq!(super::parse_dump_ports_tx(out), Some((1234, 80470276)));
        assert_eq!(super::parse_dump_ports_tx("rx pkts=1, bytes=2"), None);
    }
}
