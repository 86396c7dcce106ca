//! The copy-once datapath against the reference (rte_vhost), in one switch:
//! the same frames (60 to 9014 bytes, single descriptors and chains, over
//! mergeable receive buffers), unicast and flooded, come out byte-identical,
//! in order, none lost, none twice, whichever datapath carried them. Then
//! 10⁵ frames copy-once guest to copy-once guest take no mbuf at all.
//!
//! Topology: VLAN 10 holds c1 (sender), c2 (copy-once) and r3 (rte_vhost);
//! VLAN 20 holds r1 (sender), r2 (rte_vhost) and c3 (copy-once). Per-VLAN
//! MAC tables let both VLANs carry the very same frames, MACs included.
//! Every guest's rings are split in one test and packed in the other.
mod common;

use common::*;
use vswitch::protocol::{Command, CopiesInfo};

fn port(name: &str, datapath: &str, vlan: u16) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nmode = \"server\"\npath = \"{name}.sock\"\nmtu = 9000\n\
         datapath = \"{datapath}\"\nvlan = {vlan}\n"
    )
}

const NAMES: [&str; 6] = ["c1", "c2", "r3", "r1", "r2", "c3"];

/// Sizes around every boundary the datapaths split at (the 64-byte header
/// scratch, 2 KB buffers less the 12-byte virtio header, pages) and a
/// spread of others, in a fixed order.
fn sizes() -> Vec<usize> {
    let mut s = vec![60, 61, 63, 64, 65, 66, 76, 77, 127, 128, 129, 255, 256, 511, 1023, 1024, 1500, 1514, 1518, 2035, 2036, 2037, 2047, 2048, 2049];
    s.extend([3000, 4083, 4084, 4095, 4096, 4097, 6000, 6132, 8191, 8192, 9000, 9014]);
    let mut x = 0x9e37_79b9u32;
    for _ in 0..100 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.push(60 + x as usize % (9014 - 60 + 1));
    }
    s
}

/// A frame whose every payload byte depends on its sequence number, so a
/// byte from the wrong frame or the wrong offset shows.
fn payload_frame(dst: [u8; 6], src: [u8; 6], len: usize, seq: u32) -> Vec<u8> {
    let mut f = frame(dst, src, None, len, seq);
    for (i, b) in f.iter_mut().enumerate().skip(18) {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq.wrapping_mul(7)) as u8;
    }
    f
}

/// Sends `frames` from `from` and collects them at every one of `to`, in
/// chunks small enough for the receivers' rings.
fn carry(vms: &mut [Vm], from: usize, to: &[usize], frames: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut got = vec![Vec::new(); to.len()];
    for chunk in frames.chunks(16) {
        vms[from].send(chunk);
        for (g, &t) in got.iter_mut().zip(to) {
            g.extend(vms[t].recv(chunk.len()));
        }
    }
    got
}

#[test]
fn copy_once_and_rte_vhost_deliver_the_same_bytes() {
    differential("")
}

#[test]
fn copy_once_and_rte_vhost_deliver_the_same_bytes_on_packed_rings() {
    differential(",packed_vq=1")
}

fn differential(vm_args: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ports: String = NAMES
        .iter()
        .map(|&n| port(n, if n.starts_with('c') { "copy-once" } else { "rte_vhost" }, if ["c1", "c2", "r3"].contains(&n) { 10 } else { 20 }))
        .collect();
    let sw = Switchd::start(dir.path(), "", &ports);
    let mut vms: Vec<Vm> = NAMES.iter().map(|n| Vm::connect_args(n, &dir.path().join(format!("{n}.sock")), false, 9000, 1, vm_args)).collect();
    sw.wait_ports("guests up", |ps| ps.iter().all(|p| p.state == "up"));
    let packed = !vm_args.is_empty();
    assert!(sw.ports().iter().all(|p| p.features.iter().any(|f| f == "ring_packed") == packed), "{:?}", sw.ports());
    // net_virtio_user asks for IN_ORDER, and both datapaths take it.
    assert!(sw.ports().iter().all(|p| p.features.iter().any(|f| f == "in_order")), "{:?}", sw.ports());
    let (c1, c2, r3, r1, r2, c3) = (0, 1, 2, 3, 4, 5);

    // Unknown destination: flooded, from a copy-once guest to a copy-once
    // guest and an rte_vhost port, and from an rte_vhost port to both kinds.
    let sizes = sizes();
    let flood: Vec<_> = sizes.iter().enumerate().map(|(i, &n)| payload_frame(mac(9), mac(1), n, i as u32)).collect();
    let via_copy_once = carry(&mut vms, c1, &[c2, r3], &flood);
    let via_rte_vhost = carry(&mut vms, r1, &[r2, c3], &flood);
    for (got, what) in via_copy_once.iter().chain(&via_rte_vhost).zip(["c1->c2", "c1->r3", "r1->r2", "r1->c3"]) {
        assert_eq!(got.len(), flood.len(), "{what}: none lost, none twice");
        for (i, (g, f)) in got.iter().zip(&flood).enumerate() {
            assert!(g == f, "{what}: frame {i} ({} bytes) differs", f.len());
        }
    }

    // Learned (mac(1) on c1 and r1 from the flood above; mac(2) now):
    // unicast copy-once to copy-once against rte_vhost to rte_vhost.
    let hello = payload_frame(BCAST, mac(2), 60, 0);
    carry(&mut vms, c2, &[c1, r3], std::slice::from_ref(&hello));
    carry(&mut vms, r2, &[r1, c3], std::slice::from_ref(&hello));
    let unicast: Vec<_> = sizes.iter().enumerate().map(|(i, &n)| payload_frame(mac(2), mac(1), n, 1000 + i as u32)).collect();
    let [ref a] = carry(&mut vms, c1, &[c2], &unicast)[..] else { unreachable!() };
    let [ref b] = carry(&mut vms, r1, &[r2], &unicast)[..] else { unreachable!() };
    assert!(a == &unicast, "copy-once unicast: in order, intact");
    assert!(a == b, "byte-identical to the rte_vhost path");
    for v in [r3, c3] {
        assert!(vms[v].drain().is_empty(), "{}: nothing once learned", NAMES[v]);
    }
    assert!(sw.ports().iter().all(|p| p.drops.is_empty()), "{:?}", sw.ports());

    // 10⁵ frames copy-once to copy-once: no mbuf taken, ever (sampled while
    // they are in flight), one payload copy each. Only c1 and c2 stay: a
    // polled rte_vhost port takes and frees mbufs of its own.
    vms.truncate(2);
    sw.wait_ports("only c1 and c2", |ps| ps.iter().all(|p| (p.state == "up") == (p.name == "c1" || p.name == "c2")));
    let idle = sw.mempool_in_use();
    sw.ctl(Command::StatsClear);
    let mut sent = 0u32;
    let mut lens = [60usize, 64, 200, 1514, 1000, 128, 9014, 600].iter().cycle();
    while sent < 100_000 {
        let chunk: Vec<_> = (0..32).map(|i| frame(mac(2), mac(1), None, *lens.next().unwrap(), sent + i)).collect();
        vms[c1].send(&chunk);
        if sent.is_multiple_of(3200) {
            assert_eq!(sw.mempool_in_use(), idle, "an mbuf on the VM-to-VM path after {sent} frames");
        }
        let got = vms[c2].recv(chunk.len());
        assert!(got == chunk, "frames {sent}..{}: lost, reordered or altered", sent + 32);
        sent += 32;
    }
    let copies: CopiesInfo = serde_json::from_value(sw.ctl(Command::ShowCopies).result).unwrap();
    let vm_vm = copies.paths.iter().find(|p| p.path == "vm-vm").unwrap();
    assert_eq!((vm_vm.packets, vm_vm.payload_copies), (sent as u64, sent as u64), "{copies:?}");
    assert_eq!(sw.mempool_in_use(), idle);
}
