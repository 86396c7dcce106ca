//! Real Linux guests negotiate checksum and TSO offloads, indirect
//! descriptors and EVENT_IDX on copy-once ports: TCP crosses VM to VM in
//! frames far larger than the MTU, each with one payload copy; and a guest
//! on a port with `offloads = false` still exchanges data intact with one
//! that sends 64 KB segments (the switch cuts them for it).
mod common;

use std::time::Duration;

use common::*;
use testbed::{Guest, GuestImage, SocketRole};
use vswitch::protocol::{CopiesInfo, Command};

const CMD: Duration = Duration::from_secs(240);

/// virtio-net feature bits as the guest's driver sees them.
const GUEST_TSO4: usize = 7;
const HOST_TSO4: usize = 11;
const INDIRECT_DESC: usize = 28;
const EVENT_IDX: usize = 29;

fn ports(vm1_offloads: bool) -> String {
    format!(
        r#"
[[port]]
name = "vm1"
type = "vhost-user"
mode = "client"
path = "vm1.sock"
datapath = "copy-once"
offloads = {vm1_offloads}

[[port]]
name = "vm2"
type = "vhost-user"
mode = "server"
path = "vm2.sock"
datapath = "copy-once"
"#
    )
}

/// The guest's negotiated virtio features: '0'/'1' per bit, bit 0 first.
fn features(g: &mut Guest) -> Vec<bool> {
    let out = g.run_ok("cat /sys/bus/virtio/devices/virtio0/features", CMD).unwrap();
    let bits = out.split_whitespace().find(|t| t.len() >= 32 && t.chars().all(|c| c == '0' || c == '1')).unwrap_or_else(|| panic!("{out}"));
    bits.chars().map(|c| c == '1').collect()
}

fn md5(g: &mut Guest, file: &str) -> String {
    let out = g.run_ok(&format!("md5sum {file}"), CMD).unwrap();
    out.split_whitespace().find(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())).unwrap_or_else(|| panic!("{out}")).to_owned()
}

/// `to` fetches `mb` MB of random data from `from`'s web server.
fn transfer(from: &mut Guest, from_ip: &str, to: &mut Guest, mb: u32) {
    from.run_ok(&format!("mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count={mb} 2>/dev/null"), CMD).unwrap();
    from.run_ok("pidof httpd || httpd -p 80 -h /www", CMD).unwrap();
    to.run_ok(&format!("rm -f /tmp/f; wget -q -O /tmp/f http://{from_ip}/f"), CMD).unwrap();
    assert_eq!(md5(from, "/www/f"), md5(to, "/tmp/f"), "the file arrived intact");
    from.run_ok("rm -f /www/f", CMD).unwrap();
    to.run_ok("rm -f /tmp/f", CMD).unwrap();
}

#[test]
fn tcp_segments_cross_vm_to_vm_whole_with_one_copy() {
    let image = GuestImage::get().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", &ports(true));
    let idle = sw.mempool_in_use();
    let mut a = boot_guest("vm1", &image, dir.path(), SocketRole::QemuServer, 1);
    let mut b = boot_guest("vm2", &image, dir.path(), SocketRole::QemuClient, 2);
    sw.wait_ports("both guests connected", |ps| ps.iter().all(|p| p.state == "up"));
    for g in [&mut a, &mut b] {
        let f = features(g);
        for (bit, name) in [(GUEST_TSO4, "guest_tso4"), (HOST_TSO4, "host_tso4"), (INDIRECT_DESC, "indirect_desc"), (EVENT_IDX, "event_idx")] {
            assert!(f.get(bit).copied().unwrap_or(false), "the guest negotiated {name}: {f:?}");
        }
    }
    assert!(sw.port("vm1").features.iter().any(|f| f == "host_tso4"), "show ports names the features");

    transfer(&mut a, "10.0.0.1", &mut b, 64);

    let vm2 = sw.port("vm2");
    assert!(vm2.tx_bytes > 64 << 20, "{vm2:?}");
    assert!(vm2.tx_bytes / vm2.tx_packets.max(1) > 1514, "frames larger than the MTU reached vm2: {vm2:?}");
    // A frame that met a full receive ring (the guest late to refill it) is
    // dropped uncopied, and counted; every other one is copied once. The
    // ports' tx_full counts flooded frames too (neighbour discovery meeting
    // a full ring), which are not vm-vm packets: they bound the uncopied
    // ones from above, read after the copies.
    let copies: CopiesInfo = serde_json::from_value(sw.ctl(Command::ShowCopies).result).unwrap();
    let full: u64 = ["vm1", "vm2"].iter().map(|n| sw.port(n).drops.get("tx_full").copied().unwrap_or(0)).sum();
    let vm_vm = copies.paths.iter().find(|p| p.path == "vm-vm").unwrap();
    assert!(
        (vm_vm.payload_copies..=vm_vm.payload_copies + full).contains(&vm_vm.packets),
        "one payload copy per frame delivered: {copies:?}, tx_full {full}"
    );
    // The frames' first bytes go through switch scratch; the rest is copied.
    assert!(vm_vm.bytes_copied > 60 << 20, "{copies:?}");
    drop((a, b));
    sw.wait_ports("guests gone", |ps| ps.iter().all(|p| p.state == "waiting"));
    assert_eq!(sw.mempool_in_use(), idle, "the mempool is back to idle");
}

#[test]
fn a_guest_without_offloads_gets_the_segments_cut_for_it() {
    let image = GuestImage::get().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    let sw = Switchd::start(dir.path(), "", &ports(false));
    let idle = sw.mempool_in_use();
    let mut a = boot_guest("vm1", &image, dir.path(), SocketRole::QemuServer, 1);
    let mut b = boot_guest("vm2", &image, dir.path(), SocketRole::QemuClient, 2);
    sw.wait_ports("both guests connected", |ps| ps.iter().all(|p| p.state == "up"));
    let (fa, fb) = (features(&mut a), features(&mut b));
    assert!(!fa[HOST_TSO4] && !fa[GUEST_TSO4], "offloads = false: vm1 negotiated none: {fa:?}");
    assert!(fb[HOST_TSO4], "vm2 sends TCP segments: {fb:?}");

    // vm2 sends 64 KB segments that vm1 cannot take: cut by the switch.
    transfer(&mut b, "10.0.0.2", &mut a, 16);
    let vm1 = sw.port("vm1");
    assert!(vm1.tx_bytes / vm1.tx_packets.max(1) <= 1514, "only MTU-sized frames reached vm1: {vm1:?}");
    // And the other way: plain frames from vm1.
    transfer(&mut a, "10.0.0.1", &mut b, 16);
    drop((a, b));
    sw.wait_ports("guests gone", |ps| ps.iter().all(|p| p.state == "waiting"));
    assert_eq!(sw.mempool_in_use(), idle, "the mempool is back to idle");
}

/// The host's side of a tap port: an address on the kernel interface.
fn host_ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_guest_and_the_host_exchange_through_the_tap_port() {
    let image = GuestImage::get().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    let iface = format!("vswo{}", std::process::id() % 100_000);
    let ports = format!(
        "[[port]]\nname = \"host\"\ntype = \"dpdk\"\ndevargs = \"net_tap_vswo,iface={iface}\"\n\
         [[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"client\"\npath = \"vm1.sock\"\ndatapath = \"copy-once\"\n"
    );
    let sw = Switchd::start(dir.path(), "", &ports);
    let idle = sw.mempool_in_use();
    host_ip(&["addr", "add", "10.0.0.100/24", "dev", &iface]);
    host_ip(&["link", "set", &iface, "up"]);
    let mut a = boot_guest("vm1", &image, dir.path(), SocketRole::QemuServer, 1);
    sw.wait_ports("guest and host up", |ps| ps.iter().all(|p| p.state == "up"));

    // The host fetches from the guest: the guest's TCP segments leave
    // through the tap port (cut here: the tap PMD refuses full-sized TSO).
    a.run_ok("mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count=16 2>/dev/null", CMD).unwrap();
    a.run_ok("pidof httpd || httpd -p 80 -h /www", CMD).unwrap();
    let fetch = "import hashlib, urllib.request; print(hashlib.md5(urllib.request.urlopen('http://10.0.0.1/f', timeout=120).read()).hexdigest())";
    let out = std::process::Command::new("python3").args(["-c", fetch]).output().unwrap();
    assert!(out.status.success(), "host fetch: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), md5(&mut a, "/www/f"), "the guest's file reached the host intact");
    a.run_ok("rm -f /www/f", CMD).unwrap();

    // The guest fetches from the host's web server.
    let www = tempfile::tempdir().unwrap();
    let file = www.path().join("h");
    let dd = std::process::Command::new("dd").args(["if=/dev/urandom", &format!("of={}", file.display()), "bs=1M", "count=16"]).output().unwrap();
    assert!(dd.status.success());
    let mut server = std::process::Command::new("python3");
    server.args(["-m", "http.server", "8000", "--bind", "10.0.0.100", "--directory"]).arg(www.path());
    let _server = testbed::Proc::spawn("http.server", server).unwrap();
    let sum = std::process::Command::new("md5sum").arg(&file).output().unwrap();
    let host_sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_owned();
    // The server may still be starting: the guest retries until it answers.
    testbed::wait_until(Duration::from_secs(60), "the guest's fetch from the host", || {
        a.run("wget -q -O /tmp/h http://10.0.0.100:8000/h", CMD).is_ok_and(|(rc, _)| rc == 0).then_some(())
    })
    .unwrap();
    assert_eq!(md5(&mut a, "/tmp/h"), host_sum, "the host's file reached the guest intact");

    let host = sw.port("host");
    assert!(host.tx_bytes > 16 << 20 && host.rx_bytes > 16 << 20, "{host:?}");
    drop(a);
    sw.wait_ports("guest gone", |ps| ps.iter().any(|p| p.name == "vm1" && p.state == "waiting"));
    assert_eq!(sw.mempool_in_use(), idle, "the mempool is back to idle");
}
