//! A DPDK port (net_tap) that reaches the host kernel, vhost socket
//! permissions for a QEMU run as another user, and a switch restart under
//! running guests.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command as Cmd;

use common::*;

fn arp_request(src: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&BCAST);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f.resize(60, 0);
    f
}

#[test]
fn a_vm_reaches_the_host_through_a_tap_port() {
    let dir = tempfile::tempdir().unwrap();
    let iface = format!("vswt{}", std::process::id() % 100_000);
    let ports = format!(
        "[[port]]\nname = \"host\"\ntype = \"dpdk\"\ndevargs = \"net_tap_vswt,iface={iface}\"\n\
         [[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"vm1.sock\"\npermissions = \"0640\"\nowner = \"root\"\ngroup = \"0\"\n"
    );
    let sw = Switchd::start(dir.path(), "", &ports);
    let sock = dir.path().join("vm1.sock");
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o640);
    let ip = |args: &[&str]| {
        let out = Cmd::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ip(&["addr", "add", "10.250.0.1/24", "dev", &iface]);
    ip(&["link", "set", &iface, "up"]);
    let mut vm = Vm::connect("vm1", &sock, false, 1500);
    sw.wait_ports("both ports up", |ps| ps.iter().all(|p| p.state == "up"));

    // The host kernel answers the VM's ARP request through the switch.
    let me = mac(0x42);
    let start = std::time::Instant::now();
    let reply = loop {
        vm.send(&[arp_request(me, [10, 250, 0, 2], [10, 250, 0, 1])]);
        let got = vm.recv(1);
        if let Some(r) = got.iter().find(|f| f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]) {
            break r.clone();
        }
        assert!(start.elapsed() < DEADLINE, "no ARP reply from the host");
    };
    assert_eq!(reply[0..6], me, "unicast back to the VM");
    assert_eq!(reply[28..32], [10, 250, 0, 1], "from the host's address");
    let host = sw.port("host");
    assert!(host.tx_packets >= 1 && host.rx_packets >= 1, "{host:?}");
}

#[test]
fn guests_keep_running_across_a_switch_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Client-mode ports: the VMs are the socket servers and stay up.
    let ports = "[[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\npath = \"vm1.sock\"\n\
                 [[port]]\nname = \"vm2\"\ntype = \"vhost-user\"\npath = \"vm2.sock\"\n";
    let mut sw = Switchd::start(dir.path(), "", ports);
    let mut vm1 = Vm::connect("vm1", &dir.path().join("vm1.sock"), true, 1500);
    let mut vm2 = Vm::connect("vm2", &dir.path().join("vm2.sock"), true, 1500);
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let exchange = |a: &mut Vm, b: &mut Vm, seq: u32| {
        let f = frame(BCAST, mac(seq as u8), None, 100, seq);
        a.send(std::slice::from_ref(&f));
        assert_eq!(b.recv(1), [f]);
    };
    exchange(&mut vm1, &mut vm2, 1);

    assert!(sw.stop().success());
    let config = sw.config.clone();
    drop(sw);
    let sw = Switchd::launch(dir.path(), &config, testbed::FilePrefix::new("vswitchd-restart"));
    sw.wait_ports("guests back without a reboot", |ps| ps.iter().all(|p| p.state == "up"));
    exchange(&mut vm1, &mut vm2, 2);
    exchange(&mut vm2, &mut vm1, 3);
}
