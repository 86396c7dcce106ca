//! Ports that come and go: run-time add and delete under traffic (and their
//! persistence across a restart), guests that disconnect and return in both
//! socket modes, and a guest that stops taking packets.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use serde_json::json;
use vswitch::protocol::Command;

fn vhost_port(name: &str, mode: &str) -> String {
    format!("[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nmode = \"{mode}\"\npath = \"{name}.sock\"\n")
}

/// vm1 streams `n` sequence-numbered frames to vm2 from another thread, at
/// most `window` unreceived at a time, while `during` runs on this one.
fn stream(vm1: &mut Vm, vm2: &mut Vm, n: u32, during: impl FnOnce()) {
    let received = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        let rcv = Arc::clone(&received);
        let sender = s.spawn(move || {
            let window = 128;
            for seq in 0..n {
                let start = Instant::now();
                while seq as usize >= rcv.load(Ordering::Acquire) + window {
                    assert!(start.elapsed() < DEADLINE, "receiver stalled at {}", rcv.load(Ordering::Acquire));
                    std::hint::spin_loop();
                }
                vm1.send(&[frame(mac(2), mac(1), None, 64, seq)]);
            }
        });
        let receiver = s.spawn(move || {
            let mut got = Vec::new();
            let start = Instant::now();
            while got.len() < n as usize && start.elapsed() < DEADLINE * 4 {
                for f in vm2.drain() {
                    got.push(u32::from_be_bytes(f[14..18].try_into().unwrap()));
                }
                received.store(got.len(), Ordering::Release);
            }
            got
        });
        during();
        sender.join().unwrap();
        let got = receiver.join().unwrap();
        assert_eq!(got.len(), n as usize, "every frame arrived");
        assert!(got.iter().enumerate().all(|(i, &s)| s == i as u32), "in order, once each");
    });
}

#[test]
fn ports_added_and_deleted_under_traffic_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = vhost_port("vm1", "server") + &vhost_port("vm2", "server");
    let mut sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let mut vm1 = Vm::connect("vm1", &sock("vm1"), false, 1500);
    let mut vm2 = Vm::connect("vm2", &sock("vm2"), false, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let idle = sw.mempool_in_use();
    vm2.send(&[frame(BCAST, mac(2), None, 64, 0)]); // learn vm2's MAC
    assert_eq!(vm1.recv(1).len(), 1);

    stream(&mut vm1, &mut vm2, 20_000, || {
        for name in ["vm3", "vm4"] {
            let port = json!({"name": name, "type": "vhost-user", "mode": "server", "path": format!("{name}.sock")});
            sw.ctl(Command::PortAdd { port });
        }
        let mut vm3 = Vm::connect("vm3", &sock("vm3"), false, 1500);
        sw.wait_ports("vm3 up", |ps| ps.iter().any(|p| p.name == "vm3" && p.state == "up"));
        sw.ctl(Command::PortDel { name: "vm4".into() });
        sw.ctl(Command::PortDel { name: "vm3".into() });
        vm3.disconnect();
    });
    assert!(sw.ports().iter().all(|p| p.name == "vm1" || p.name == "vm2"));
    sw.wait_ports("drained", |_| sw.mempool_in_use() == idle);

    // vm3 added then deleted, vm4 likewise; now add vm5 and delete vm2 from
    // the config: a restart keeps exactly vm1 and vm5.
    sw.ctl(Command::PortAdd { port: json!({"name": "vm5", "type": "vhost-user", "mode": "server", "path": "vm5.sock", "vlan": 7}) });
    sw.ctl(Command::PortDel { name: "vm2".into() });
    drop((vm1, vm2));
    assert!(sw.stop().success());
    let prefix = testbed::FilePrefix::new("vswitchd-again");
    let text = std::fs::read_to_string(&sw.config).unwrap().replace(sw.prefix(), prefix.as_str());
    std::fs::write(&sw.config, text).unwrap();
    let config = sw.config.clone();
    drop(sw);
    let sw = Switchd::launch(dir.path(), &config, prefix);
    let names: Vec<_> = sw.ports().into_iter().map(|p| (p.name, p.vlan)).collect();
    assert_eq!(names, [("vm1".to_string(), "access 1".to_string()), ("vm5".to_string(), "access 7".to_string())]);
}

#[test]
fn guests_reconnect_in_both_socket_modes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = vhost_port("vm1", "server") + &vhost_port("vm2", "client");
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    // vm2's switch port is a client: the VM is the socket server.
    let mut vm1 = Vm::connect("vm1", &sock("vm1"), false, 1500);
    let mut vm2 = Vm::connect("vm2", &sock("vm2"), true, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let idle = sw.mempool_in_use();
    let ping = |a: &mut Vm, b: &mut Vm, seq: u32| {
        let f = frame(BCAST, mac(seq as u8), None, 64, seq);
        a.send(std::slice::from_ref(&f));
        assert_eq!(b.recv(1), [f]);
    };
    ping(&mut vm1, &mut vm2, 1);
    ping(&mut vm2, &mut vm1, 2);
    for round in 0..2u32 {
        vm1.disconnect();
        sw.wait_ports("vm1 waiting", |ps| ps.iter().any(|p| p.name == "vm1" && p.state == "waiting"));
        vm1 = Vm::connect("vm1", &sock("vm1"), false, 1500);
        vm2.disconnect();
        sw.wait_ports("vm2 waiting", |ps| ps.iter().any(|p| p.name == "vm2" && p.state == "waiting"));
        vm2 = Vm::connect("vm2", &sock("vm2"), true, 1500);
        sw.wait_ports("guests back", |ps| ps.iter().all(|p| p.state == "up"));
        ping(&mut vm1, &mut vm2, 10 + round);
        ping(&mut vm2, &mut vm1, 20 + round);
    }
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}

#[test]
fn a_guest_that_takes_nothing_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ports = vhost_port("vm1", "server") + &vhost_port("vm2", "server") + &vhost_port("stuck", "server");
    let sw = Switchd::start(dir.path(), "vhost_retries = 8", &ports);
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let mut vm1 = Vm::connect("vm1", &sock("vm1"), false, 1500);
    let mut vm2 = Vm::connect("vm2", &sock("vm2"), false, 1500);
    let _stuck = Vm::connect("stuck", &sock("stuck"), false, 1500); // never drained
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let idle = sw.mempool_in_use();

    // Broadcasts reach vm2 and the stuck guest, whose ring fills: after
    // that its copies are dropped (counted), and vm2 still gets every one.
    let n = 2000u32;
    for seq in 0..n {
        let f = frame(BCAST, mac(1), None, 64, seq);
        vm1.send(std::slice::from_ref(&f));
        assert_eq!(vm2.recv(1), [f], "frame {seq}");
    }
    let stuck = sw.port("stuck");
    let full = stuck.drops.get("tx_full").copied().unwrap_or(0);
    assert!(full > 0 && stuck.tx_packets + full == n as u64, "{stuck:?}");
    sw.wait_ports("mempool back to idle", |_| sw.mempool_in_use() == idle);
}
