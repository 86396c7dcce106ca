//! An OpenFlow controller nobody here wrote controls the switch: os-ken's
//! `simple_switch_13` (os-ken 1.4.1, installed by `make deps` into
//! target/venv; started by `common/osken_run.py`, which says why). The
//! switch connects out to it (`controller = "tcp:..."`); two
//! net_virtio_user VMs reach each other through PACKET_IN, PACKET_OUT and
//! the flows it installs, which `vswitchctl show flows` lists.
mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command as Cmd;
use std::time::Duration;

use common::*;
use testbed::{wait_until, Proc};
use vswitch::protocol::{Command, FlowsInfo};


fn venv_python() -> PathBuf {
    let bin = testbed::target_dir().join("venv/bin/python");
    assert!(bin.exists(), "{} missing: run make deps (os-ken into target/venv)", bin.display());
    bin
}

/// os-ken with simple_switch_13 on a free loopback port; when it listens.
fn start_controller() -> (Proc, SocketAddr) {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut cmd = Cmd::new(venv_python());
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/osken_run.py"));
    cmd.args(["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", &port.to_string(), "os_ken.app.simple_switch_13"]);
    let ctl = Proc::spawn("osken-manager", cmd).unwrap();
    wait_until(DEADLINE, "os-ken to listen", || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().map(drop))
        .unwrap_or_else(|e| panic!("{e}: {}", ctl.tail(20)));
    (ctl, addr)
}

fn flows(sw: &Switchd) -> FlowsInfo {
    serde_json::from_value(sw.ctl(Command::ShowFlows).result).unwrap()
}

#[test]
fn os_ken_simple_switch_connects_two_vms() {
    let (ctl, addr) = start_controller();
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), &format!("controller = \"tcp:{addr}\""), &plain_ports(&["vm1", "vm2"]));
    let mut vms: Vec<Vm> = ["vm1", "vm2"].iter().map(|n| Vm::connect(n, &dir.path().join(format!("{n}.sock")), false, 1500)).collect();
    sw.wait_ports("both guests connected", |ps| ps.iter().all(|p| p.state == "up"));
    // simple_switch_13 installs its table-miss flow once it has the features.
    wait_until(DEADLINE, "the controller's table-miss flow", || {
        let f = flows(&sw);
        (!f.controllers.is_empty() && f.flows.iter().any(|f| f.priority == 0 && f.actions == "CONTROLLER")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", flows(&sw), ctl.tail(30)));

    let (a, b) = (mac(0xa), mac(0xb));
    // a to b, b unknown: PACKET_IN, then a PACKET_OUT flooding it to vm2.
    let f = frame(b, a, None, 80, 1);
    vms[0].send(std::slice::from_ref(&f));
    assert_eq!(vms[1].recv(1), [f], "flooded by the controller");
    // b answers: the controller knows a, installs b->a, sends it to vm1.
    let f = frame(a, b, None, 80, 2);
    vms[1].send(std::slice::from_ref(&f));
    assert_eq!(vms[0].recv(1), [f]);
    // a to b again: now both are known, a->b is installed too.
    let f = frame(b, a, None, 80, 3);
    vms[0].send(std::slice::from_ref(&f));
    assert_eq!(vms[1].recv(1), [f]);
    wait_until(DEADLINE, "both learned flows", || (flows(&sw).flows.iter().filter(|f| f.priority == 1).count() == 2).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {:?}", flows(&sw)));

    // From here on the flows carry the traffic, the controller sees none.
    let sent_in = flows(&sw).packet_ins;
    let burst: Vec<_> = (0..50).map(|i| frame(b, a, None, 64 + i, 100 + i as u32)).collect();
    vms[0].send(&burst);
    assert_eq!(vms[1].recv(burst.len()), burst);
    let back: Vec<_> = (0..20).map(|i| frame(a, b, None, 64 + i, 200 + i as u32)).collect();
    vms[1].send(&back);
    assert_eq!(vms[0].recv(back.len()), back);
    let shown = flows(&sw);
    assert_eq!(shown.packet_ins, sent_in, "no PACKET_IN for flows the table holds: {shown:?}");
    assert_eq!(shown.packet_in_dropped, 0);
    let learned = |m: &str| shown.flows.iter().find(|f| f.priority == 1 && f.matches.contains(m)).unwrap_or_else(|| panic!("{m}: {shown:?}")).clone();
    let ab = learned("dl_dst=02:00:00:00:00:0b");
    assert!(ab.matches.contains("in_port=1") && ab.actions == "output:2" && ab.packets >= 50, "{ab:?}");
    let ba = learned("dl_dst=02:00:00:00:00:0a");
    assert!(ba.matches.contains("in_port=2") && ba.actions == "output:1" && ba.packets >= 20, "{ba:?}");
    drop(ctl);
}
