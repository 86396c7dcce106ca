//! Copy-once vhost ports (the switch walks the guests' rings itself) in a
//! running vswitchd, beside an rte_vhost port: flooding, learning and
//! unicast in order, jumbo frames over mergeable buffers, a guest that
//! leaves and comes back (our ring indices handed back and resumed).
mod common;

use common::*;
use vswitch::protocol::{Command, CopiesInfo};

fn port(name: &str, datapath: &str) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"{name}.sock\"\nmtu = 9000\ndatapath = \"{datapath}\"\n"
    )
}

#[test]
fn copy_once_ports_switch_like_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ports = port("vm1", "copy-once") + &port("vm2", "copy-once") + &port("vm3", "rte_vhost") + &port("vm4", "copy-once") + "packed_rings = false\n";
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    // vm1 and vm4 offer packed rings: vm1's port takes them (the default),
    // vm4's refuses them, and vm4 runs on split rings.
    let args = |n: &str| if ["vm1", "vm4"].contains(&n) { ",packed_vq=1" } else { "" };
    let mut vms: Vec<Vm> = ["vm1", "vm2", "vm3", "vm4"].iter().map(|n| Vm::connect_args(n, &sock(n), false, 9000, 1, args(n))).collect();
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let packed = |n: &str| sw.port(n).features.iter().any(|f| f == "ring_packed");
    assert_eq!(["vm1", "vm2", "vm4"].map(packed), [true, false, false]);
    let idle = sw.mempool_in_use();

    // A broadcast from a copy-once guest reaches both other kinds of port.
    let b = frame(BCAST, mac(1), None, 60, 0);
    vms[0].send(std::slice::from_ref(&b));
    assert_eq!(vms[1].recv(1), std::slice::from_ref(&b));
    assert_eq!(vms[2].recv(1), [b]);
    let b = frame(BCAST, mac(2), None, 60, 1);
    vms[1].send(std::slice::from_ref(&b));
    assert_eq!(vms[0].recv(1), [b]);
    assert_eq!(vms[2].recv(1).len(), 1);

    // Learned: unicast copy-once to copy-once, in order, nothing elsewhere;
    // sizes up to jumbo frames spread over mergeable receive buffers.
    let frames: Vec<_> = (0..200u32).map(|i| frame(mac(2), mac(1), None, [60, 512, 1514, 4000, 9014][i as usize % 5], 100 + i)).collect();
    for chunk in frames.chunks(16) {
        vms[0].send(chunk);
        assert_eq!(vms[1].recv(chunk.len()), chunk, "in order, intact");
    }
    assert!(vms[2].drain().is_empty(), "no flooding once learned");

    // And from the rte_vhost port into a copy-once guest.
    let f = frame(mac(1), mac(3), None, 1000, 7);
    vms[2].send(std::slice::from_ref(&f));
    assert_eq!(vms[0].recv(1), [f]);

    // Copy-once to copy-once: one payload copy per packet; the rte_vhost
    // port's frame paid two (out of its guest, into the other).
    let copies: CopiesInfo = serde_json::from_value(sw.ctl(Command::ShowCopies).result).unwrap();
    let vm_vm = copies.paths.iter().find(|p| p.path == "vm-vm").unwrap();
    assert_eq!(vm_vm.packets, 201, "{copies:?}");
    assert_eq!(vm_vm.payload_copies, 200 + 2, "{copies:?}");

    // vm2 leaves and comes back: the rings resume where they stopped.
    vms[1].disconnect();
    sw.wait_ports("vm2 gone", |ps| ps.iter().any(|p| p.name == "vm2" && p.state == "waiting"));
    vms[1] = Vm::connect("vm2", &sock("vm2"), false, 9000);
    sw.wait_ports("vm2 back", |ps| ps.iter().all(|p| p.state == "up"));
    let f = frame(mac(2), mac(1), None, 200, 9);
    vms[0].send(std::slice::from_ref(&f));
    assert_eq!(vms[1].recv(1), [f]);
    let g = frame(mac(1), mac(2), None, 300, 10);
    vms[1].send(std::slice::from_ref(&g));
    assert_eq!(vms[0].recv(1), [g]);
    let refused = ["bad_head", "bad_next", "chain_too_long", "outside_memory", "wrong_direction", "indirect", "bad_length"];
    assert!(sw.ports().iter().all(|p| refused.iter().all(|r| !p.drops.contains_key(*r))), "{:?}", sw.ports());
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}
