//! Day-zero smoke test: two real Linux guests under QEMU on vhost-user
//! sockets served by dpdk-testpmd (net_vhost, io forwarding) ping each other.
//! It proves the guest builder, the QEMU recipe and test clean-up before any
//! of our own code is involved.
use std::process::Command;
use std::time::Duration;

use testbed::{wait_until, FilePrefix, Guest, GuestImage, GuestNet, Proc, SocketRole};

#[test]
fn two_guests_ping_through_testpmd() {
    let image = GuestImage::get().expect("build the guest image");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = |i: usize| dir.path().join(format!("vhost{i}.sock"));
    let prefix = FilePrefix::new("testpmd");

    let mut cmd = Command::new("dpdk-testpmd");
    cmd.args(["-l", "0,1"])
        .args(prefix.eal_args(512))
        .arg("--vdev")
        .arg(format!("net_vhost0,iface={}", sock(0).display()))
        .arg("--vdev")
        .arg(format!("net_vhost1,iface={}", sock(1).display()))
        .args(["--", "--forward-mode=io", "--auto-start", "--nb-cores=1"])
        .arg("--total-num-mbufs=16384");
    let testpmd = Proc::spawn("testpmd", cmd).expect("start dpdk-testpmd");
    wait_until(Duration::from_secs(10), "vhost-user sockets", || {
        (sock(0).exists() && sock(1).exists()).then_some(())
    })
    .unwrap();

    let net = |i: usize| GuestNet {
        socket: sock(i),
        role: SocketRole::QemuClient,
        mac: format!("52:54:00:00:00:0{}", i + 1),
        ip: format!("10.0.0.{}/24", i + 1),
        mtu: None,
        packed: false,
    };
    let mut a = Guest::boot("guest-a", &image, &net(0)).expect("boot guest a");
    let mut b = Guest::boot("guest-b", &image, &net(1)).expect("boot guest b");
    a.wait_ready(Duration::from_secs(180)).unwrap();
    b.wait_ready(Duration::from_secs(180)).unwrap();

    let out = b
        .run_ok("ping -c 3 -W 5 10.0.0.1", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\ntestpmd:\n{}", testpmd.tail(3000)));
    assert!(out.contains("3 packets received"), "{out}");
}
