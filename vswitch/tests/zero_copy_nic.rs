//! Zero copy VM to NIC in a running vswitchd: a copy-once guest (a
//! net_virtio_user VM) sends to a NIC port (net_tap, read by the test on
//! the kernel's side through a packet socket). Frames of every size arrive
//! intact (up to 1514 bytes: a tap device takes no more); those at or above `zero_copy_min_bytes` leave with no payload
//! copy (`show copies`), the rest are copied; the guest leaves and comes
//! back and its ring resumes; the pool ends idle. Then a real Linux guest
//! on the default zero-copy keys: the host fetches 64 MB from it through
//! the tap port, and again through net_af_packet on a veth pair, intact,
//! with payload copies for at most 5% of the packets.
//!
//! A tap device copies what it is sent and frees the mbufs at once, so
//! nothing is held here across polls: a NIC that holds buffers (and a guest
//! that goes, or changes its memory, meanwhile) is `zero_copy_held.rs`.
mod common;

use std::process::Command as Cmd;
use std::time::Instant;

use common::*;
use pmd_bridge::sys::PacketSocket;
use vswitch::protocol::{Command, CopiesInfo};

/// A packet socket on interface `iface`: every frame the kernel sees there.
struct Wire(PacketSocket);

impl Wire {
    fn open(iface: &str) -> Wire {
        Wire(PacketSocket::open(iface, std::time::Duration::from_millis(100)).unwrap_or_else(|e| panic!("packet socket on {iface}: {e}")))
    }

    /// Sends `frame` out of the interface (into the switch's tap port).
    fn send(&self, frame: &[u8]) {
        assert_eq!(self.0.send(frame).unwrap(), frame.len());
    }

    /// Frames of our EtherType seen until `n` arrived or the deadline (our
    /// own going out are not the switch's).
    fn recv(&self, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16384];
        let start = Instant::now();
        while got.len() < n && start.elapsed() < DEADLINE {
            if let Some(r) = self.0.recv_incoming(&mut buf).filter(|&r| r > 14 && buf[12..14] == [0x88, 0xb5]) {
                got.push(buf[..r].to_vec());
            }
        }
        got
    }
}

fn ip(args: &[&str]) {
    let out = Cmd::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn copies(sw: &Switchd) -> CopiesInfo {
    serde_json::from_value(sw.ctl(Command::ShowCopies).result).unwrap()
}

#[test]
fn a_copy_once_guest_sends_through_a_nic_without_copying_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let iface = format!("vswz{}", std::process::id() % 100_000);
    // net_virtio_user asks for IN_ORDER, whose guests' chains are not lent.
    let ports = format!(
        "[[port]]\nname = \"nic\"\ntype = \"dpdk\"\ndevargs = \"net_tap_vswz,iface={iface}\"\n\
         [[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"vm1.sock\"\ndatapath = \"copy-once\"\nin_order = false\n"
    );
    let sw = Switchd::start(dir.path(), "zero_copy_min_bytes = 512", &ports);
    ip(&["link", "set", &iface, "up"]);
    let wire = Wire::open(&iface);
    let sock = dir.path().join("vm1.sock");
    let mut vm = Vm::connect("vm1", &sock, false, 1500);
    sw.wait_ports("both ports up", |ps| ps.iter().all(|p| p.state == "up"));
    let idle = sw.mempool_in_use();

    // A host behind the NIC, learned from a frame it sends: then the VM's
    // frames to it are unicast, VM to NIC.
    let host = mac(0x50);
    wire.send(&frame(mac(1), host, None, 60, 0));
    // The kernel's own frames from the tap (IPv6 on link-up) flood to the
    // VM too: only the host's own frame says the host is learned.
    let start = Instant::now();
    while !vm.drain().iter().any(|f| f[6..12] == host) {
        assert!(start.elapsed() < DEADLINE, "the host's frame never reached the VM");
    }
    let sizes = [60usize, 300, 511, 512, 700, 1000, 1400, 1514];
    let frames: Vec<Vec<u8>> = (0..64u32).map(|i| frame(host, mac(1), None, sizes[i as usize % sizes.len()], 1 + i)).collect();
    for chunk in frames.chunks(8) {
        vm.send(chunk);
        assert_eq!(wire.recv(chunk.len()), chunk, "in order, intact");
    }
    let c = copies(&sw);
    let vm_nic = c.paths.iter().find(|p| p.path == "vm-nic").unwrap();
    let small = frames.iter().filter(|f| f.len() < 512).count() as u64;
    assert_eq!(vm_nic.packets, 64, "{c:?}");
    assert_eq!(vm_nic.payload_copies, small, "only the small frames copied: {c:?}");
    assert_eq!((c.zero_copy["lent"], c.zero_copy["small"]), (64 - small, small), "{c:?}");
    let headers: u64 = frames.iter().filter(|f| f.len() >= 512).map(|_| 64).sum();
    let small_bytes: u64 = frames.iter().filter(|f| f.len() < 512).map(|f| f.len() as u64).sum();
    assert_eq!(vm_nic.bytes_copied, headers + small_bytes, "a lent frame costs its 64-byte header copy");

    // The guest goes and comes back: nothing is left out, the ring resumes.
    vm.disconnect();
    sw.wait_ports("vm1 gone", |ps| ps.iter().any(|p| p.name == "vm1" && p.state == "waiting"));
    vm = Vm::connect("vm1", &sock, false, 1500);
    sw.wait_ports("vm1 back", |ps| ps.iter().all(|p| p.state == "up"));
    let again: Vec<Vec<u8>> = (0..16u32).map(|i| frame(host, mac(1), None, 1514, 100 + i)).collect();
    vm.send(&again);
    assert_eq!(wire.recv(16), again);
    assert_eq!(sw.port("vm1").lent_to_nics, 0);
    sw.wait_ports("the mempool idle again", |_| sw.mempool_in_use() == idle);
}

/// The host fetches `mb` MB from `g`'s web server through the tap port.
fn host_fetch(g: &mut testbed::Guest, mb: u32) {
    const CMD: std::time::Duration = std::time::Duration::from_secs(240);
    g.run_ok(&format!("mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count={mb} 2>/dev/null"), CMD).unwrap();
    g.run_ok("pidof httpd || httpd -p 80 -h /www", CMD).unwrap();
    let fetch = "import hashlib, urllib.request; print(hashlib.md5(urllib.request.urlopen('http://10.0.0.1/f', timeout=200).read()).hexdigest())";
    let out = Cmd::new("python3").args(["-c", fetch]).output().unwrap();
    assert!(out.status.success(), "host fetch: {}", String::from_utf8_lossy(&out.stderr));
    let sum = g.run_ok("md5sum /www/f", CMD).unwrap();
    let digest = sum.split_whitespace().find(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())).unwrap_or_else(|| panic!("{sum}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest, "the guest's file reached the host intact");
}

#[test]
fn a_real_guest_sends_to_the_host_with_next_to_no_payload_copies() {
    let iface = format!("vswg{}", std::process::id() % 100_000);
    guest_to_host(&format!("net_tap_vswg,iface={iface}"), &iface);
}

/// A veth pair, deleted when dropped (both ends go with either).
struct Veth(String);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Cmd::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The same through `net_af_packet` on one end of a veth pair, the host on
/// the other: a NIC with no offloads, so each TCP segment is cut here and
/// summed, still over the guest's buffers.
#[test]
fn a_real_guest_sends_to_the_host_through_af_packet_with_next_to_no_payload_copies() {
    let id = std::process::id() % 100_000;
    let veth = Veth(format!("vswa{id}"));
    let host = format!("vswb{id}");
    ip(&["link", "add", &veth.0, "type", "veth", "peer", "name", &host]);
    ip(&["link", "set", &veth.0, "up"]);
    // The host's frames must leave with their checksums filled: a veth
    // hands the packet socket on its peer what it was given, partial sums
    // included, and the guest would drop them.
    let out = Cmd::new("ethtool").args(["-K", &host, "tx", "off"]).output().unwrap();
    assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
    guest_to_host(&format!("net_af_packet_vswa,iface={}", veth.0), &host);
}

/// A real guest on the default zero-copy keys behind a NIC port of
/// `devargs`, the host on `iface`: the host fetches 64 MB from the guest.
fn guest_to_host(devargs: &str, iface: &str) {
    let image = testbed::GuestImage::get().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    // The default config's keys: zero copy on, from 1024 bytes.
    let ports = format!(
        "[[port]]\nname = \"host\"\ntype = \"dpdk\"\ndevargs = \"{devargs}\"\n\
         [[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"client\"\npath = \"vm1.sock\"\ndatapath = \"copy-once\"\n"
    );
    let sw = Switchd::start(dir.path(), "", &ports);
    let idle = sw.mempool_in_use();
    ip(&["addr", "add", "10.0.0.100/24", "dev", iface]);
    ip(&["link", "set", iface, "up"]);
    let mut g = boot_guest("vm1", &image, dir.path(), testbed::SocketRole::QemuServer, 1);
    sw.wait_ports("guest and host up", |ps| ps.iter().all(|p| p.state == "up"));
    sw.ctl(Command::StatsClear);
    host_fetch(&mut g, 64);
    let c = copies(&sw);
    let vm_nic = c.paths.iter().find(|p| p.path == "vm-nic").unwrap();
    // Of the packets the NIC sent (a segment cut here counts each frame it
    // became: af_packet takes no TSO).
    let sent = sw.port("host").tx_packets;
    assert!(vm_nic.payload_copies * 20 <= sent, "payload copies at most 5% of the {sent} packets sent: {c:?}");
    // What is copied: each lent frame's headers (up to 160 bytes with
    // offloads; each cut frame's own), each copied frame whole.
    assert!(vm_nic.bytes_copied <= (sent - vm_nic.payload_copies) * 160 + vm_nic.payload_copies * 1514, "{c:?}");
    assert!(vm_nic.bytes_copied < 16 << 20, "64 MB sent, a fraction copied: {c:?}");
    assert!(c.zero_copy["lent"] > 0, "{c:?}");
    drop(g);
    sw.wait_ports("guest gone", |ps| ps.iter().any(|p| p.name == "vm1" && p.state == "waiting"));
    assert_eq!(sw.port("vm1").lent_to_nics, 0);
    sw.wait_ports("the mempool idle again", |_| sw.mempool_in_use() == idle);
}
