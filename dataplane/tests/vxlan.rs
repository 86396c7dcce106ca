//! VXLAN through the egress stage on real DPDK: a VM port (slot 0), an
//! underlay (slot 1) and a vxlan port on it (slot 2), the VM's and the
//! underlay's wires `net_ring`s the test reads. Head-end replication over
//! one shared payload, decapsulation and the remote learned, unicast to
//! the learned remote, ARP both ways, and the drops by reason.
#[path = "common/vxlan_rig.rs"]
mod rig;

use rig::*;

#[test]
fn a_flood_is_one_shared_payload_under_a_header_per_remote() {
    let mut rig = Rig::new("vxf");
    rig.vtep.learn_neighbour(0, HOP[0]);
    rig.vtep.learn_neighbour(1, HOP[1]);
    let f = frame([0xff; 6], VM, 300);
    rig.input(0, std::slice::from_ref(&f));
    let got = Rig::take(&mut rig.underlay_wire);
    assert_eq!(got.len(), 2, "one packet per remote");
    let mut payloads = Vec::new();
    for (m, r) in got.iter().zip(0..) {
        let segs: Vec<&[u8]> = m.segments().collect();
        assert_eq!(segs.len(), 2, "a header segment in front of the frame");
        assert_eq!(segs[0].len(), OUTER_LEN);
        assert_eq!(&segs[0][..6], &HOP[r], "to remote {r}'s link-layer address");
        assert_eq!(&segs[0][30..34], &REMOTES[r].octets());
        assert_eq!(segs[1], &f[..]);
        payloads.push(segs[1].as_ptr());
        let whole = m.to_vec();
        let o = Outer::parse(&whole).unwrap().expect("VXLAN");
        assert_eq!((o.vni, o.src_ip, o.dst_ip, o.inner_len), (42, LOCAL, REMOTES[r], f.len()));
    }
    assert_eq!(payloads[0], payloads[1], "not copied: the same buffer under both headers");
}

#[test]
fn decapsulated_frames_teach_the_remote_and_unicast_follows() {
    let mut rig = Rig::new("vxd");
    let inner = frame(VM, FAR, 200);
    rig.input(1, &[from_remote(1, 42, &inner)]);
    let got = Rig::take(&mut rig.vm_wire);
    assert_eq!(got.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), [inner], "the inner frame, whole, to the VM (flooded)");
    assert_eq!(rig.vtep.remote_of(FAR), Some(1));
    assert_eq!(rig.vtep.neighbour(1), Some(HOP[1]), "the remote's MAC from its packet");
    assert_eq!(rig.fdb.lookup(1, FAR, 1), Some((2, 1)), "learned on the vxlan port");
    // Back to FAR: to remote 1 alone.
    rig.input(0, &[frame(FAR, VM, 100)]);
    let got = Rig::take(&mut rig.underlay_wire);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].to_vec()[30..34], &REMOTES[1].octets());
    assert_eq!(rig.counters.ports[2].rx_packets.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn arp_is_answered_and_asked() {
    let mut rig = Rig::new("vxa");
    // Asked for our address: answered from the underlay's MAC.
    let ask = Arp::frame(wire::ARP_REQUEST, HOP[0], REMOTES[0], [0; 6], LOCAL, [0xff; 6]);
    rig.input(1, &[ask.to_vec()]);
    let got = Rig::take(&mut rig.underlay_wire);
    assert_eq!(got.len(), 1);
    let reply = Arp::parse(&got[0].to_vec()).unwrap();
    assert_eq!((reply.op, reply.sha, reply.spa, reply.tpa), (wire::ARP_REPLY, UNDERLAY_MAC, LOCAL, REMOTES[0]));
    assert_eq!(rig.vtep.neighbour(0), Some(HOP[0]), "the asker learned");
    // Remote 1 unknown: its copy dropped, an ARP request sent instead.
    rig.input(0, &[frame([0xff; 6], VM, 100)]);
    let got: Vec<Vec<u8>> = Rig::take(&mut rig.underlay_wire).iter().map(Mbuf::to_vec).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    let request = got.iter().find_map(|f| Arp::parse(f)).expect("an ARP request");
    assert_eq!((request.op, request.spa, request.tpa), (wire::ARP_REQUEST, LOCAL, REMOTES[1]));
    assert_eq!(rig.drops(2, DropReason::NoNeighbour), 1);
    // Not ours: another address's ARP is bridged on the underlay's VLAN.
    let other = Arp::frame(wire::ARP_REQUEST, HOP[0], REMOTES[0], [0; 6], Ipv4Addr::new(10, 0, 0, 7), [0xff; 6]);
    rig.input(1, &[other.to_vec()]);
    assert!(Rig::take(&mut rig.underlay_wire).is_empty());
    assert_eq!(rig.counters.ports[1].flooded.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn bad_packets_and_big_frames_are_counted_by_reason() {
    let mut rig = Rig::new("vxb");
    rig.vtep.learn_neighbour(0, HOP[0]);
    rig.vtep.learn_neighbour(1, HOP[1]);
    let inner = frame(VM, FAR, 100);
    let mut flags = from_remote(0, 42, &inner);
    flags[OUTER_LEN - 8] = 0;
    let mut stranger = from_remote(0, 42, &inner);
    stranger[26..30].copy_from_slice(&[10, 0, 0, 99]);
    let sum = !wire::ones_sum(&{
        let mut h = stranger[14..34].to_vec();
        h[10..12].copy_from_slice(&[0, 0]);
        h
    });
    stranger[24..26].copy_from_slice(&sum.to_be_bytes());
    let short = from_remote(0, 42, &inner)[..OUTER_LEN + 6].to_vec();
    rig.input(1, &[from_remote(0, 43, &inner), flags, stranger, short]);
    assert!(Rig::take(&mut rig.vm_wire).is_empty());
    for r in [DropReason::VxlanUnknownVni, DropReason::VxlanFlags, DropReason::VxlanUnknownRemote, DropReason::VxlanShort] {
        assert_eq!(rig.drops(1, r), 1, "{r:?}");
    }
    assert_eq!(rig.vtep.remote_of(FAR), None, "nothing learned");
    // 1500 B of underlay MTU carries frames of 1464 B at most.
    rig.input(0, &[frame([0xff; 6], VM, 1464), frame([0xff; 6], VM, 1465)]);
    assert_eq!(Rig::take(&mut rig.underlay_wire).len(), 2, "the first, to both remotes");
    assert_eq!(rig.drops(2, DropReason::UnderlayMtu), 1);
}
