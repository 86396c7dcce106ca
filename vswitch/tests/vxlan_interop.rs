//! A vxlan port against the Linux kernel's own VXLAN device. A network
//! namespace holds the kernel's side: a veth end with the underlay address
//! 192.168.77.1 and `vxlan0` (VNI 42, remote 192.168.77.2) with 10.42.0.1.
//! The switch's underlay is `net_af_packet` on the other veth end; the
//! switch answers ARP for 192.168.77.2 there. On the bridge side a
//! `net_tap` port puts the host kernel (10.42.0.2) on the same segment:
//! ping and TCP run between two real IP stacks, through the switch's
//! encapsulation one way and its decapsulation the other. A test VM on a
//! copy-once vhost-user port (net_virtio_user) reaches the kernel's side
//! too, and a real QEMU guest on one serves 8 MB over TCP to it.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command as Cmd;
use std::sync::mpsc;
use std::time::Instant;

use common::*;
use testbed::wait_until;
use vswitch::protocol::{Command, FdbInfo};

fn run(cmd: &str, args: &[&str]) {
    let out = Cmd::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The kernel's side, in a namespace of its own; removed (with both veth
/// ends) on drop, failed test or not.
struct KernelSide {
    ns: String,
    veth: String,
}

impl KernelSide {
    fn create(tag: &str) -> KernelSide {
        let (ns, veth, peer) = (format!("vxl{tag}"), format!("vxr{tag}"), format!("vxn{tag}"));
        let _ = Cmd::new("ip").args(["netns", "del", &ns]).output();
        run("ip", &["netns", "add", &ns]);
        let k = KernelSide { ns: ns.clone(), veth: veth.clone() };
        let ns_ip = |args: &[&str]| run("ip", &[&["-n", &ns], args].concat());
        run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", &ns]);
        ns_ip(&["addr", "add", "192.168.77.1/24", "dev", &peer]);
        ns_ip(&["link", "add", "vxlan0", "type", "vxlan", "id", "42", "remote", "192.168.77.2", "local", "192.168.77.1", "dstport", "4789", "dev", &peer]);
        ns_ip(&["addr", "add", "10.42.0.1/24", "dev", "vxlan0"]);
        // Frames cross the veth as the kernel made them: with checksums
        // left to an offload, or 64 KB GSO packets, a packet socket would
        // read them unfinished. Everything is done in software here.
        for dev in [&peer, "vxlan0"] {
            run("ip", &["netns", "exec", &ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
        }
        run("ethtool", &["-K", &veth, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
        for dev in [&peer, "vxlan0", "lo"] {
            ns_ip(&["link", "set", dev, "up"]);
        }
        run("ip", &["link", "set", &veth, "up"]);
        k
    }

    /// Runs `f` on a thread inside the namespace.
    fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            pmd_bridge::sys::enter_net_namespace(&ns).unwrap_or_else(|e| panic!("setns: {e}"));
            f()
        })
    }
}

impl Drop for KernelSide {
    fn drop(&mut self) {
        let _ = Cmd::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Cmd::new("ip").args(["link", "del", &self.veth]).output();
    }
}

/// busybox's ping (busybox-static is a dependency already).
fn arp_request(src: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let head = [&BCAST[..], &src, &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1], &src, &sender_ip, &[0; 6], &target_ip].concat();
    [head, vec![0; 60 - 42]].concat()
}

fn ping(args: &[&str]) -> bool {
    Cmd::new("busybox").args(["ping", "-q", "-c", "1", "-W", "1"]).args(args).output().unwrap().status.success()
}

/// FNV-1a: equal on both ends or some byte differs.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads to the end; the bytes' hash and count.
fn read_all(s: &mut TcpStream) -> (u64, usize) {
    let (mut h, mut n, mut buf) = (0xcbf2_9ce4_8422_2325u64, 0, vec![0u8; 65536]);
    loop {
        match s.read(&mut buf).unwrap() {
            0 => return (h, n),
            k => {
                fnv(&mut h, &buf[..k]);
                n += k;
            }
        }
    }
}

#[test]
fn a_vxlan_port_interoperates_with_the_linux_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let tag = (std::process::id() % 100_000).to_string();
    let kernel = KernelSide::create(&tag);
    let tap = format!("vxt{tag}");
    let ports = format!(
        "[[port]]\nname = \"uplink\"\ntype = \"dpdk\"\ndevargs = \"net_af_packet_vx,iface={}\"\nvlan = 4000\n\
         [[port]]\nname = \"tun42\"\ntype = \"vxlan\"\nvni = 42\nlocal_ip = \"192.168.77.2\"\nremote_ips = [\"192.168.77.1\"]\nunderlay = \"uplink\"\n\
         [[port]]\nname = \"host\"\ntype = \"dpdk\"\ndevargs = \"net_tap_vx,iface={tap}\"\n{}",
        kernel.veth,
        server_port("vm1", "copy-once")
    );
    let sw = Switchd::start(dir.path(), "", &ports);
    run("ip", &["addr", "add", "10.42.0.2/24", "dev", &tap]);
    run("ethtool", &["-K", &tap, "tx", "off", "tso", "off", "gso", "off"]);
    run("ip", &["link", "set", &tap, "up"]);
    let mut vm = Vm::connect("vm1", &dir.path().join("vm1.sock"), false, 1500);
    sw.wait_ports("ports up", |ps| ps.iter().all(|p| p.state == "up"));

    // The first frames wait on ARP both ways (the kernel's for the
    // switch's underlay address, the switch's for the kernel's).
    wait_until(DEADLINE, "a ping through the tunnel", || ping(&["10.42.0.1"]).then_some(())).unwrap_or_else(|e| panic!("{e}: {:#?}", sw.ports()));
    for _ in 0..3 {
        assert!(ping(&["10.42.0.1"]), "once up, every ping: {:#?}", sw.ports());
    }

    // A VM on a vhost-user port (copy-once) reaches the kernel's VXLAN
    // device too: its ARP request for 10.42.0.1 is answered.
    let me = mac(0x42);
    let start = Instant::now();
    let reply = loop {
        vm.send(&[arp_request(me, [10, 42, 0, 3], [10, 42, 0, 1])]);
        let got = vm.recv(1);
        if let Some(r) = got.into_iter().find(|f| f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == [10, 42, 0, 1]) {
            break r;
        }
        assert!(start.elapsed() < DEADLINE, "no ARP reply through the tunnel: {:#?}", sw.ports());
    };
    assert_eq!(reply[0..6], me, "unicast back to the VM");

    // Learning: the kernel's inner MAC on the vxlan port, its VTEP's
    // link-layer address resolved.
    let fdb: Vec<FdbInfo> = serde_json::from_value(sw.ctl(Command::ShowFdb).result).unwrap();
    let behind = |e: &FdbInfo| e.port == "tun42" && e.vlan == 1 && e.remote.as_deref() == Some("192.168.77.1");
    assert!(fdb.iter().any(behind), "{fdb:#?}");
    let tun = sw.port("tun42");
    assert!(tun.detail.contains("192.168.77.1 at "), "{tun:?}");
    assert!(tun.rx_packets >= 4 && tun.tx_packets >= 4, "{tun:?}");

    // TCP both ways, several megabytes, checked byte for byte.
    let (ready_tx, ready) = mpsc::channel();
    let server = kernel.spawn(move || {
        let l = TcpListener::bind("10.42.0.1:5042").unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let got = read_all(&mut s);
        s.write_all(&pattern(2, 3 << 20)).unwrap();
        got
    });
    ready.recv_timeout(DEADLINE).unwrap();
    let sent = pattern(1, 6 << 20);
    let mut c = TcpStream::connect_timeout(&"10.42.0.1:5042".parse().unwrap(), DEADLINE).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.set_write_timeout(Some(DEADLINE)).unwrap();
    let start = Instant::now();
    c.write_all(&sent).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let back = read_all(&mut c);
    let there = server.join().unwrap();
    let hash = |b: &[u8]| {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        fnv(&mut h, b);
        (h, b.len())
    };
    assert_eq!(there, hash(&sent), "host to kernel VXLAN, 6 MB");
    assert_eq!(back, hash(&pattern(2, 3 << 20)), "kernel VXLAN to host, 3 MB");
    eprintln!("9 MB over TCP through the tunnel in {:?}", start.elapsed());

    // A frame that would not fit the underlay once encapsulated is counted
    // and dropped, never fragmented: 1500 B of IP is 1550 B on the wire.
    assert!(!ping(&["-s", "1472", "10.42.0.1"]));
    let tun = sw.port("tun42");
    assert!(tun.drops.get("underlay_mtu").copied().unwrap_or(0) >= 1, "{tun:?}");
    assert!(ping(&["-s", "1422", "10.42.0.1"]), "1450 B of IP fits: {tun:?}");

    // Malformed VXLAN from the kernel's side: counted by reason, dropped.
    let inner: Vec<u8> = frame(BCAST, mac(0x77), None, 60, 1);
    let vxlan = |flags: u8, vni: u8, inner: &[u8]| [&[flags, 0, 0, 0, 0, 0, vni, 0][..], inner].concat();
    let bad = vec![vxlan(0x08, 42, &[]), vxlan(0x00, 42, &inner), vxlan(0x08, 43, &inner)];
    kernel
        .spawn(move || {
            let s = UdpSocket::bind("192.168.77.1:0").unwrap();
            for p in bad {
                s.send_to(&p, "192.168.77.2:4789").unwrap();
            }
        })
        .join()
        .unwrap();
    sw.wait_ports("malformed VXLAN counted", |ps| {
        let up = ps.iter().find(|p| p.name == "uplink").unwrap();
        ["vxlan_short", "vxlan_flags", "vxlan_unknown_vni"].iter().all(|r| up.drops.get(*r) == Some(&1))
    });
    let fdb: Vec<FdbInfo> = serde_json::from_value(sw.ctl(Command::ShowFdb).result).unwrap();
    assert!(!fdb.iter().any(|e| e.mac == "02:00:00:00:00:77"), "nothing learned from a dropped packet");
    assert!(ping(&["10.42.0.1"]), "still working: {:#?}", sw.ports());
}

/// A real Linux guest (QEMU) on a copy-once vhost-user port, MTU 1450 so
/// that its frames fit a 1500-byte underlay once encapsulated, with its
/// offloads on (its 64 KB TSO segments are cut before the tunnel): it
/// pings the kernel's VXLAN device, and the kernel's side fetches 8 MB
/// over TCP from the guest's web server, md5 equal.
#[test]
fn a_real_guest_moves_tcp_through_the_tunnel() {
    let image = testbed::GuestImage::get().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("g{}", std::process::id() % 10_000);
    let kernel = KernelSide::create(&tag);
    let ports = format!(
        "[[port]]\nname = \"uplink\"\ntype = \"dpdk\"\ndevargs = \"net_af_packet_vxg,iface={}\"\nvlan = 4000\n\
         [[port]]\nname = \"tun42\"\ntype = \"vxlan\"\nvni = 42\nlocal_ip = \"192.168.77.2\"\nremote_ips = [\"192.168.77.1\"]\nunderlay = \"uplink\"\n\
         [[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nmode = \"client\"\npath = \"vm1.sock\"\ndatapath = \"copy-once\"\n",
        kernel.veth
    );
    let sw = Switchd::start(dir.path(), "", &ports);
    let net = testbed::GuestNet {
        socket: dir.path().join("vm1.sock"),
        role: testbed::SocketRole::QemuServer,
        mac: "52:54:00:00:00:03".into(),
        ip: "10.42.0.3/24".into(),
        mtu: Some(1450),
        packed: false,
    };
    let mut g = testbed::Guest::boot("vm1", &image, &net).expect("boot guest");
    g.wait_ready(std::time::Duration::from_secs(180)).unwrap();
    sw.wait_ports("ports up", |ps| ps.iter().all(|p| p.state == "up"));
    const CMD: std::time::Duration = std::time::Duration::from_secs(120);
    // The first frames wait on ARP both ways.
    wait_until(DEADLINE, "the guest's ping through the tunnel", || g.run_ok("ping -c 1 -W 2 10.42.0.1", CMD).ok())
        .unwrap_or_else(|e| panic!("{e}: {:#?}", sw.ports()));
    g.run_ok("mkdir -p /www && dd if=/dev/urandom of=/www/f bs=1M count=8 2>/dev/null && (pidof httpd || httpd -p 80 -h /www)", CMD).unwrap();
    let fetch = "import hashlib, urllib.request; print(hashlib.md5(urllib.request.urlopen('http://10.42.0.3/f', timeout=100).read()).hexdigest())";
    let out = Cmd::new("ip").args(["netns", "exec", &kernel.ns, "python3", "-c", fetch]).output().unwrap();
    assert!(out.status.success(), "fetch in the kernel's namespace: {} {:#?}", String::from_utf8_lossy(&out.stderr), sw.ports());
    let sum = g.run_ok("md5sum /www/f", CMD).unwrap();
    let digest = sum.split_whitespace().find(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())).unwrap_or_else(|| panic!("{sum}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest, "the guest's file reached the kernel's side intact");
    let tun = sw.port("tun42");
    assert!(tun.tx_bytes > 8 << 20, "8 MB encapsulated: {tun:?}");
    assert_eq!(tun.drops.get("underlay_mtu"), None, "every frame fit: {tun:?}");
}
