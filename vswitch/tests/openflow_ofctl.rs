//! OpenFlow 1.3 through a client nobody here wrote: Open vSwitch's own
//! `ovs-ofctl -O OpenFlow13` adds, dumps and deletes flows on the switch's
//! management socket, and traffic between net_virtio_user VMs follows
//! them (output, drop, VLAN push), then falls back to NORMAL.
mod common;

use std::path::Path;
use std::process::Command as Cmd;

use common::*;
use vswitch::protocol::{Command, FlowsInfo};


/// Runs `ovs-ofctl -O OpenFlow13 <args> unix:<socket> [extra]`; its stdout.
fn ofctl(sock: &Path, cmd: &str, extra: &[&str]) -> String {
    let out = Cmd::new("ovs-ofctl")
        .args(["-O", "OpenFlow13", "--timeout=10", cmd])
        .arg(format!("unix:{}", sock.display()))
        .args(extra)
        .output()
        .expect("ovs-ofctl (Debian's openvswitch-common) installed");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ovs-ofctl {cmd} {extra:?}: {}\n{stdout}{stderr}", out.status);
    stdout
}

fn flows(sw: &Switchd) -> FlowsInfo {
    serde_json::from_value(sw.ctl(Command::ShowFlows).result).unwrap()
}

/// The switch, its three VMs connected, and its management socket.
fn setup() -> (tempfile::TempDir, Switchd, Vec<Vm>, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", &plain_ports(&["vm1", "vm2", "vm3"]));
    let vms: Vec<Vm> = ["vm1", "vm2", "vm3"].iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 1500)).collect();
    sw.wait_ports("every guest connected", |ps| ps.iter().all(|p| p.state == "up"));
    let sock = dir.path().join("br0.mgmt");
    (dir, sw, vms, sock)
}

#[test]
fn ovs_ofctl_programs_the_flow_table_and_traffic_follows() {
    let (_dir, sw, mut vms, sock) = setup();
    let (a, b, c) = (mac(0xa), mac(0xb), mac(0xc));
    let send = |vms: &mut Vec<Vm>, f: &[u8]| {
        let before = sw.port("vm1").rx_packets;
        vms[0].send(&[f.to_vec()]);
        sw.wait_ports("the switch to take the frame", |ps| ps[0].rx_packets > before);
    };

    // The switch as ovs-ofctl sees it: its ports by number and name.
    let show = ofctl(&sock, "show", &[]);
    for p in ["1(vm1)", "2(vm2)", "3(vm3)"] {
        assert!(show.contains(p), "{show}");
    }
    assert_eq!(ofctl(&sock, "dump-flows", &[]).lines().filter(|l| l.contains("actions=")).count(), 0);

    // No flows: the L2 path floods an unknown destination.
    let f = frame(b, a, None, 80, 1);
    send(&mut vms, &f);
    assert_eq!(vms[1].recv(1), std::slice::from_ref(&f));
    assert_eq!(vms[2].recv(1), [f]);

    // in_port=1 goes to port 2 only; to c it is dropped; to b tagged 10 on port 3.
    ofctl(&sock, "add-flow", &["priority=10,in_port=1,actions=output:2"]);
    ofctl(&sock, "add-flow", &[&format!("priority=20,in_port=1,dl_dst={},actions=drop", vswitch::protocol::format_mac(&c))]);
    ofctl(&sock, "add-flow", &["priority=30,in_port=1,dl_dst=02:00:00:00:00:0b,actions=push_vlan:0x8100,set_field:4106->vlan_vid,output:3"]);
    let f = frame(mac(0xd), a, None, 90, 2);
    send(&mut vms, &f);
    assert_eq!(vms[1].recv(1), [f]);
    assert!(vms[2].drain().is_empty(), "output:2 only");
    let f = frame(c, a, None, 90, 3);
    send(&mut vms, &f);
    let f = frame(b, a, None, 100, 4);
    send(&mut vms, &f);
    assert_eq!(vms[2].recv(1), [retag(&f, Some(10))], "pushed VLAN 10, out port 3");
    assert!(vms[1].drain().is_empty(), "the dropped frame reached no one");
    assert_eq!(sw.port("vm1").drops.get("flow_drop"), Some(&1));

    // ovs-ofctl reads the flows back with their counters; so does vswitchctl.
    let dump = ofctl(&sock, "dump-flows", &[]);
    assert_eq!(dump.lines().filter(|l| l.contains("actions=")).count(), 3, "{dump}");
    let line = |needle: &str| dump.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {dump}")).to_string();
    assert!(line("priority=10").contains("n_packets=1") && line("priority=10").contains("actions=output:2"), "{dump}");
    assert!(line("priority=20").contains("n_packets=1") && line("priority=20").contains("actions=drop"), "{dump}");
    assert!(line("priority=30").contains("push_vlan:0x8100"), "{dump}");
    let shown = flows(&sw);
    assert_eq!(shown.flows.iter().map(|f| (f.priority, f.packets)).collect::<Vec<_>>(), [(30, 1), (20, 1), (10, 1)], "{shown:?}");
    assert_eq!(shown.flows[0].actions, "push_vlan:0x8100,set_field:10->vlan_vid,output:3");

    // Strict delete of one, then of everything from port 1.
    ofctl(&sock, "del-flows", &["--strict", "priority=20,in_port=1,dl_dst=02:00:00:00:00:0c"]);
    assert_eq!(flows(&sw).flows.len(), 2);
    ofctl(&sock, "del-flows", &["in_port=1"]);
    assert!(flows(&sw).flows.is_empty());
    assert_eq!(ofctl(&sock, "dump-flows", &[]).lines().filter(|l| l.contains("actions=")).count(), 0);

    // Back to NORMAL: b was never a source, so a frame to it floods.
    let f = frame(b, a, None, 70, 5);
    send(&mut vms, &f);
    assert_eq!(vms[1].recv(1), std::slice::from_ref(&f));
    assert_eq!(vms[2].recv(1), [f]);

    // Port counters and a table-stats request answer too.
    let stats = ofctl(&sock, "dump-ports", &[]);
    assert!(stats.contains("port  1: rx pkts=") || stats.contains("port  \"vm1\""), "{stats}");
    assert!(ofctl(&sock, "dump-tables", &[]).contains("table 0"), "table stats");
}

/// A PACKET_OUT whose input is the controller's port (no port of the
/// switch) killed the PMD thread that ran it: it looked its input up by
/// slot.
#[test]
fn regression_packet_out_from_the_controller_port() {
    let (_dir, mut sw, mut vms, sock) = setup();
    let f = frame(mac(0xb), mac(0xc), None, 64, 1);
    let hex: String = f.iter().map(|x| format!("{x:02x}")).collect();
    ofctl(&sock, "packet-out", &[&format!("in_port=CONTROLLER,packet={hex},actions=output:2")]);
    assert_eq!(vms[1].recv(1), std::slice::from_ref(&f));
    ofctl(&sock, "packet-out", &[&format!("in_port=CONTROLLER,packet={hex},actions=NORMAL,FLOOD")]);
    assert_eq!(vms[1].recv(1), std::slice::from_ref(&f), "FLOOD reaches every port; NORMAL has no input to learn from");
    assert_eq!(vms[2].recv(1), std::slice::from_ref(&f));
    assert_eq!(vms[0].recv(1), [f], "the controller's port is none of the switch's");
    assert!(sw.proc.try_wait().is_none(), "vswitchd (and its PMD thread) alive");
}
