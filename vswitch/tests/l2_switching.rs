//! Learning, flooding, VLAN tagging and drops through a running vswitchd,
//! with net_virtio_user ports as the VMs.
//!
//! Topology: vm1, vm2 access VLAN 10; vm3 access VLAN 20; trunk carries
//! 10 and 20 tagged. Waits are on the switch's own counters.
mod common;

use common::*;
use vswitch::protocol::{Command, CopiesInfo, FdbInfo, PortInfo};

const PORTS: &str = r#"
[[port]]
name = "vm1"
type = "vhost-user"
mode = "server"
path = "vm1.sock"
vlan = 10

[[port]]
name = "vm2"
type = "vhost-user"
mode = "server"
path = "vm2.sock"
vlan = 10

[[port]]
name = "vm3"
type = "vhost-user"
mode = "server"
path = "vm3.sock"
vlan = 20

[[port]]
name = "trunk"
type = "vhost-user"
mode = "server"
path = "trunk.sock"
trunk = [10, 20]
mtu = 9000
"#;

struct Net {
    sw: Switchd,
    vms: Vec<Vm>,
    idle_mbufs: u32,
    _dir: tempfile::TempDir,
}

impl Drop for Net {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let idle = self.idle_mbufs;
            self.sw.wait_ports("mempool back to idle", |_| self.sw.mempool_in_use() == idle);
        }
    }
}

fn setup() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", PORTS);
    let vms = ["vm1", "vm2", "vm3", "trunk"]
        .iter()
        .map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 9000))
        .collect();
    sw.wait_ports("every guest connected", |ps| ps.iter().all(|p| p.state == "up"));
    let idle_mbufs = sw.mempool_in_use();
    Net { sw, vms, idle_mbufs, _dir: dir }
}

impl Net {
    /// Sends from VM `i` and waits until the switch has decided every frame
    /// (forwarded, flooded or dropped: counted at the end of the burst,
    /// after its outputs were sent; `rx_packets` is counted at its start).
    fn send(&mut self, i: usize, frames: &[Vec<u8>]) {
        let name = self.vms[i].name.clone();
        let decided = |p: &PortInfo| p.forwarded + p.flooded + p.drops.values().sum::<u64>();
        let want = decided(&self.sw.port(&name)) + frames.len() as u64;
        self.vms[i].send(frames);
        self.sw.wait_ports("the switch to decide the frames", |ps| ps.iter().any(|p| p.name == name && decided(p) >= want));
    }

    fn drain_all(&mut self) -> Vec<Vec<Vec<u8>>> {
        self.vms.iter_mut().map(Vm::drain).collect()
    }
}

#[test]
fn learning_flooding_and_vlans() {
    let mut net = setup();
    let (a, b, c) = (mac(0xa), mac(0xb), mac(0xc));

    // Broadcast from vm1 (VLAN 10): vm2 untagged, trunk tagged 10, not vm3.
    let f = frame(BCAST, a, None, 60, 1);
    net.send(0, std::slice::from_ref(&f));
    let got = net.drain_all();
    assert!(got[0].is_empty(), "not back to the sender");
    assert_eq!(got[1], std::slice::from_ref(&f));
    assert!(got[2].is_empty(), "VLAN 20 sees nothing of VLAN 10");
    assert_eq!(got[3], [retag(&f, Some(10))]);

    // Unknown unicast floods the VLAN likewise.
    let f = frame(b, a, None, 100, 2);
    net.send(0, std::slice::from_ref(&f));
    let got = net.drain_all();
    assert_eq!((got[1].len(), got[2].len(), got[3].len()), (1, 0, 1));

    // vm2 answers from b to a: a was learned on vm1, so only vm1 gets it.
    let f = frame(a, b, None, 200, 3);
    net.send(1, std::slice::from_ref(&f));
    let got = net.drain_all();
    assert_eq!(got[0], [f]);
    assert!(got[2].is_empty() && got[3].is_empty());

    // Now a to b is unicast to vm2 only, in order, for a whole burst.
    let frames: Vec<_> = (0..100).map(|i| frame(b, a, None, 60 + i, 100 + i as u32)).collect();
    net.send(0, &frames);
    let got = net.vms[1].recv(frames.len());
    assert_eq!(got, frames);
    assert!(net.vms[3].drain().is_empty(), "learned: no more flooding");

    // Trunk, tagged 20, broadcast: vm3 gets it untagged; VLAN 10 ports nothing.
    let f = frame(BCAST, c, Some(20), 80, 4);
    net.send(3, std::slice::from_ref(&f));
    let got = net.drain_all();
    assert_eq!(got[2], [retag(&f, None)]);
    assert!(got[0].is_empty() && got[1].is_empty());

    // vm3 to c: unicast back to the trunk, tagged 20.
    let f = frame(c, mac(0xd), None, 64, 5);
    net.send(2, std::slice::from_ref(&f));
    assert_eq!(net.vms[3].recv(1), [retag(&f, Some(20))]);

    // rte_vhost copies twice VM to VM (out of one guest, into the other).
    let copies: CopiesInfo = serde_json::from_value(net.sw.ctl(Command::ShowCopies).result).unwrap();
    let vm_vm = copies.paths.iter().find(|p| p.path == "vm-vm").unwrap();
    assert!(vm_vm.packets >= 100 && vm_vm.payload_copies == 2 * vm_vm.packets, "{copies:?}");
    let flood = copies.paths.iter().find(|p| p.path == "flood").unwrap();
    assert!(flood.payload_copies > flood.packets, "one copy in, one per guest out: {copies:?}");

    let fdb: Vec<FdbInfo> = serde_json::from_value(net.sw.ctl(Command::ShowFdb).result).unwrap();
    let has = |vlan: u16, m: [u8; 6], port: &str| {
        fdb.iter().any(|e| e.vlan == vlan && e.mac == vswitch::protocol::format_mac(&m) && e.port == port)
    };
    assert!(has(10, a, "vm1") && has(10, b, "vm2") && has(20, c, "trunk") && has(20, mac(0xd), "vm3"), "{fdb:#?}");

    for p in net.sw.ports() {
        let rx_drops: u64 = dataplane::counters::DropReason::ALL
            .iter()
            .filter(|r| r.is_rx_side())
            .map(|r| p.drops.get(r.name()).copied().unwrap_or(0))
            .sum();
        assert_eq!(p.forwarded + p.flooded + rx_drops, p.rx_packets, "every rx packet counted once: {p:?}");
    }
}

#[test]
fn bad_frames_are_counted_and_dropped() {
    let mut net = setup();
    let a = mac(0x1a);
    // A runt, a frame over vm1's MTU, a tagged frame on an access port, an
    // untagged frame on the trunk, a multicast source: each dropped and counted.
    net.send(0, &[frame(BCAST, a, None, 64, 1)[..13].to_vec()]);
    net.send(0, &[frame(BCAST, a, None, 1519, 2)]);
    net.send(0, &[frame(BCAST, a, Some(10), 64, 3)]);
    net.send(3, &[frame(BCAST, a, None, 64, 4)]);
    let mut mcast = mac(0x1b);
    mcast[0] |= 1;
    net.send(1, &[frame(BCAST, mcast, None, 64, 5)]);
    let vm1 = net.sw.port("vm1");
    assert_eq!(vm1.drops.get("runt"), Some(&1), "{vm1:?}");
    assert_eq!(vm1.drops.get("oversize"), Some(&1), "{vm1:?}");
    assert_eq!(vm1.drops.get("vlan_filtered"), Some(&1), "{vm1:?}");
    assert_eq!(net.sw.port("trunk").drops.get("vlan_filtered"), Some(&1));
    assert_eq!(net.sw.port("vm2").drops.get("malformed"), Some(&1));
    assert!(net.drain_all().iter().all(Vec::is_empty), "nothing was delivered");

    // Good traffic still flows afterwards.
    let f = frame(BCAST, a, None, 1518, 6);
    net.send(0, std::slice::from_ref(&f));
    assert_eq!(net.vms[1].recv(1), [f]);
}

#[test]
fn jumbo_frames_vm_to_vm() {
    let dir = tempfile::tempdir().unwrap();
    let ports = PORTS.replace("vlan = 10\n", "vlan = 10\nmtu = 9000\n");
    let sw = Switchd::start(dir.path(), "", &ports);
    let mut vms: Vec<Vm> =
        ["vm1", "vm2"].iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 9000)).collect();
    sw.wait_ports("guests connected", |ps| ps.iter().filter(|p| p.state == "up").count() == 2);
    let frames: Vec<_> = [60usize, 1514, 2048, 4096, 8000, 9018].iter().enumerate().map(|(i, &n)| frame(BCAST, mac(1), None, n, i as u32)).collect();
    vms[0].send(&frames);
    assert_eq!(vms[1].recv(frames.len()), frames, "jumbo frames intact, in order");
}
