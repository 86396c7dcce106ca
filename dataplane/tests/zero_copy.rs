//! Zero copy VM to NIC through the egress stage, on real DPDK: a copy-once
//! guest (its rings in plain memory, driven by the test as a driver would)
//! sends to `net_ring` ports whose transmit rings the test reads, so the
//! test plays a NIC that holds buffers until it frees them. What leaves, when
//! the guest gets its chains back (out of order, only once every mbuf over
//! them is freed), the in-flight bound, small frames, floods, a guest that
//! rewrites its buffers, and a ring parked while a NIC holds its chains.
#[path = "common/zero_copy_rig.rs"]
mod rig;

use std::sync::Arc;

use dataplane::copy_once::{return_parked, CopyOnceRx, GuestFeatures, GuestRing, Interrupt, ZeroCopy};
use dataplane::counters::{Path, ZeroCopy as Outcome};
use dataplane::flood::PortSet;
use dataplane::fwd::PortView;
use dataplane::virtq::{SplitQueue, Virtqueue};
use dataplane::vlan::VlanMode;
use pmd_bridge::extbuf::Lender;
use pmd_bridge::guest_mem::Gpa;
use pmd_bridge::Mbuf;
use rig::*;

#[test]
fn frames_leave_from_guest_memory_and_chains_return_once_freed_in_any_order() {
    let mut r = Rig::new("zo", 1, false, 32, 256, 0);
    let sizes = [600usize, 1514, 4000, 9014];
    let frames: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| frame(0xff, n, i as u8)).collect();
    for (h, f) in frames.iter().enumerate() {
        r.a.send(h as u16, f);
    }
    assert_eq!(r.poll(), 4);
    assert_eq!(r.a.used_idx(), 0, "nothing back while the NIC holds the chains");
    let mut held = r.take(0);
    assert_eq!(held.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), frames, "intact");
    assert!(held.iter().all(|m| m.nb_segs() == 2), "a header segment and the guest's buffer");
    assert_eq!(r.outcome(Outcome::Lent), 4);
    assert_eq!(r.path(Path::Flood)[1], 0, "no payload copy");
    // Freed 3, 0, 1, 2: the used ring says so, in that order.
    let mut used = 0;
    for k in [3usize, 0, 1, 2] {
        drop(std::mem::replace(&mut held[k], r.pool.alloc().unwrap()));
        r.poll();
        let now = r.a.used_idx();
        assert_eq!(r.a.used_heads(used, now), [k as u16]);
        used = now;
    }
    drop(held);
    r.finish();
}

#[test]
fn small_frames_and_frames_past_the_in_flight_bound_are_copied_and_return_at_once() {
    let mut r = Rig::new("zb", 1, false, 2, 512, 0);
    r.a.send(0, &frame(0xff, 100, 0));
    for h in 1..6 {
        r.a.send(h, &frame(0xff, 1514, h as u8));
    }
    assert_eq!(r.poll(), 6);
    assert_eq!((r.outcome(Outcome::Small), r.outcome(Outcome::Lent), r.outcome(Outcome::InFlightLimit)), (1, 2, 3));
    assert_eq!(r.a.used_heads(0, r.a.used_idx()), [0, 3, 4, 5], "copies return with their burst; 2 chains held");
    assert_eq!(r.path(Path::Flood)[1], 4, "one payload copy each for the copied frames");
    // The ring never starves: the guest goes on sending while the NIC holds.
    for round in 0..3u8 {
        r.a.send(10 + round as u16, &frame(0xff, 1514, round));
        r.poll();
    }
    assert_eq!(r.a.used_idx(), 7);
    let held = r.take(0);
    assert_eq!(held.len(), 9);
    drop(held);
    r.poll();
    assert_eq!(r.a.used_idx(), 9, "the lent chains back once freed");
    r.finish();
}

#[test]
fn a_guest_rewriting_its_buffer_after_sending_changes_only_its_payload() {
    let mut r = Rig::new("zw", 1, false, 8, 256, 0);
    let f = frame(0xff, 1000, 1);
    r.a.send(0, &f);
    r.poll();
    // The guest scribbles over the whole frame, headers and all.
    r.a.mem.write(Gpa(BUFS + BUF * (SIZE as u64 / 2)), &[0xee; 1000]).unwrap();
    let held = r.take(0);
    let out = held[0].to_vec();
    assert_eq!(out[..64], f[..64], "the headers the switch decided on");
    assert_eq!(out[64..], [0xee; 936], "the payload is the guest's own (no copy was made)");
    drop(held);
    r.finish();
}

#[test]
fn a_flood_lends_one_chain_to_every_nic_and_copies_into_the_guest() {
    let mut r = Rig::new("zf", 2, true, 8, 256, 0);
    let f = frame(0xff, 1514, 5);
    r.a.send(0, &f);
    r.poll();
    let b = r.b.as_ref().unwrap();
    assert_eq!((b.used_idx(), b.received(0, f.len())), (1, f.clone()), "the guest output: the copy-once copy");
    let (x, y) = (r.take(0), r.take(1));
    assert_eq!((x[0].to_vec(), y[0].to_vec()), (f.clone(), f.clone()));
    assert_eq!(r.outcome(Outcome::Lent), 2);
    assert_eq!(r.path(Path::Flood)[1], 1, "one payload copy: the guest's");
    drop(x);
    r.poll();
    assert_eq!(r.a.used_idx(), 0, "the other NIC still holds it");
    drop(y);
    r.poll();
    assert_eq!(r.a.used_heads(0, r.a.used_idx()), [0]);
    r.finish();
}

/// Unicast frames for a copy-once guest are held and delivered together
/// after the burst's pass; a flood into the same guest in between must
/// deliver those held first, or the guest would see the burst reordered.
#[test]
fn frames_for_a_guest_keep_their_order_around_a_flood() {
    let mut r = Rig::new("zo", 0, true, 8, 256, 0);
    r.fdb.learn(1, [2, 0, 0, 0, 0, 0xb], 1, 1, 1);
    let sent = [frame(0xb, 100, 1), frame(0xff, 100, 2), frame(0xb, 100, 3), frame(0xff, 100, 4)];
    r.poll_burst(&sent);
    let b = r.b.as_ref().unwrap();
    assert_eq!(b.used_heads(0, b.used_idx()), [0, 1, 2, 3]);
    let got: Vec<_> = (0..4).map(|h| b.received(h, 100)).collect();
    assert_eq!(got, sent, "in the order sent");
    r.finish();
}

/// A flow's output into a copy-once guest goes as an mbuf, batched until
/// the burst's end; the frames for that guest after it in the burst were
/// held and delivered before it: the guest saw the burst reordered.
#[test]
fn regression_a_flows_output_keeps_its_place_among_held_frames() {
    use dataplane::flow::{port_no, Action, FlowEntry, FlowTable, Match, PmdFlows};
    let mut r = Rig::new("zf", 0, true, 8, 256, 0);
    r.fdb.learn(1, [2, 0, 0, 0, 0, 0xb], 1, 1, 1);
    let from_c = Match { eth_src: Some(([2, 0, 0, 0, 0, 0xc], [0xff; 6])), ..Default::default() };
    let table = FlowTable::new(vec![FlowEntry::new(&from_c, 10, 0, vec![Action::Output(port_no(1))], Default::default())]);
    r.flows = Some(PmdFlows::new(Arc::new(table), Arc::new(dataplane::capture::CaptureRing::new(1024)), None));
    let mut by_flow = frame(0xb, 100, 1);
    by_flow[11] = 0xc;
    let sent = [by_flow, frame(0xb, 100, 2), frame(0xb, 100, 3)];
    r.poll_burst(&sent);
    let b = r.b.as_ref().unwrap();
    let got: Vec<_> = b.used_heads(0, b.used_idx()).into_iter().map(|h| b.received(h, 100)).collect();
    assert_eq!(got, sent, "in the order sent");
    r.finish();
}

/// A rig whose copy-once guest `b` (port 1) has a second, `c` (port 2),
/// beside it; each one's address learned.
fn two_guests(name: &str) -> (Rig, Guest) {
    let mut r = Rig::new(name, 0, true, 8, 256, 0);
    let mut c = Guest::new();
    (0..8).for_each(|h| c.offer_rx(h));
    r.ports[2] = Some(PortView::new("c", 2, 1, VlanMode::Access(1), 9000).with_vm(true));
    r.tx[2] = Some(dataplane::port_io::TxPort::CopyOnce(Box::new(dataplane::copy_once::CopyOnceTx::new(c.queue(0), 0))));
    r.flood = dataplane::flood::FloodSets::new(&r.ports, |s| r.tx[s as usize].is_some());
    r.fdb.learn(1, [2, 0, 0, 0, 0, 0xb], 1, 1, 1);
    r.fdb.learn(1, [2, 0, 0, 0, 0, 0xc], 2, 1, 1);
    (r, c)
}

/// Frames of one burst held for two copy-once guests: each guest gets its
/// own, none lost to the other's delivery.
#[test]
fn regression_frames_held_for_two_guests_all_arrive() {
    let (mut r, c) = two_guests("z2");
    let sent = [frame(0xb, 100, 1), frame(0xc, 100, 2), frame(0xb, 100, 3), frame(0xc, 100, 4)];
    r.poll_burst(&sent);
    let b = r.b.as_ref().unwrap();
    assert_eq!((0..b.used_idx()).map(|h| b.received(h, 100)).collect::<Vec<_>>(), [sent[0].clone(), sent[2].clone()]);
    assert_eq!((0..c.used_idx()).map(|h| c.received(h, 100)).collect::<Vec<_>>(), [sent[1].clone(), sent[3].clone()]);
    r.finish();
}

/// Frames decided alike in a row are held alike, a drop between them
/// changes nothing, and a run for one guest ends where another's begins:
/// each guest gets its own frames in order, each counted once.
#[test]
fn frames_held_alike_in_a_row_all_arrive_in_order() {
    let (mut r, c) = two_guests("z3");
    let mut runt = frame(0xb, 100, 0);
    runt.truncate(10);
    let sent = [frame(0xb, 100, 1), frame(0xb, 100, 2), runt, frame(0xb, 100, 3), frame(0xc, 100, 4), frame(0xc, 100, 5), frame(0xb, 100, 6)];
    r.poll_burst(&sent);
    let b = r.b.as_ref().unwrap();
    let to = |k: &[usize]| k.iter().map(|&i| sent[i].clone()).collect::<Vec<_>>();
    assert_eq!((0..b.used_idx()).map(|h| b.received(h, 100)).collect::<Vec<_>>(), to(&[0, 1, 3, 6]));
    assert_eq!((0..c.used_idx()).map(|h| c.received(h, 100)).collect::<Vec<_>>(), to(&[4, 5]));
    assert_eq!(r.path(Path::VmVm), [6, 6, 600], "each counted once");
    r.finish();
}

#[test]
fn a_ring_parked_while_a_nic_holds_its_chains_returns_them_from_the_control_thread() {
    let mut r = Rig::new("zp", 1, false, 8, 256, 0);
    r.a.send(0, &frame(0xff, 2000, 0));
    r.a.send(1, &frame(0xff, 3000, 1));
    r.poll();
    // A replan takes the ring back: its lender goes along, chains out.
    let rx = std::mem::replace(&mut r.rx, CopyOnceRx::new(r.a.queue(1)));
    let (ring, lender) = rx.into_parts();
    let mut lender = lender.unwrap();
    let (_, mut queue) = ring.into_queue();
    assert_eq!(lender.in_flight(), 2);
    assert_eq!(return_parked(&mut lender, &mut queue, &r.a.mem), None, "nothing freed yet");
    let held = r.take(0);
    let map = r.a.mem.lend_map().unwrap();
    assert_eq!(Arc::strong_count(map), 2, "the lend map is held while chains are out");
    drop(held);
    assert_eq!(return_parked(&mut lender, &mut queue, &r.a.mem), Some(true), "published; the guest asked to be interrupted");
    assert_eq!(r.a.used_idx(), 2);
    assert_eq!(Arc::strong_count(map), 1, "the lend map let go");
    r.finish();
}

/// The Internet checksum of `bytes` (folded, not complemented).
fn sum16(bytes: &[u8], mut acc: u32) -> u16 {
    for c in bytes.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// An IPv4 TCP segment of `payload` bytes from the guest to `dst`, with
/// the virtio-net header a Linux guest sends it with (GSO TCPV4 at `mss`,
/// NEEDS_CSUM, the pseudo-header sum in the TCP checksum field).
fn tso_frame(dst: u8, payload: usize, mss: u16) -> ([u8; HDR], Vec<u8>) {
    let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00];
    let total = (20 + 20 + payload) as u16;
    f.extend([0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend([0x30, 0x39, 0x00, 0x50, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    let ip_sum = !sum16(&f[14..34], 0);
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    f.extend((0..payload).map(|i| (i * 13 % 251) as u8));
    let pseudo = sum16(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 6], u32::from(total - 20));
    f[50..52].copy_from_slice(&pseudo.to_be_bytes());
    let mut h = [0u8; HDR];
    h[0] = 1; // NEEDS_CSUM
    h[1] = 1; // GSO_TCPV4
    h[2..4].copy_from_slice(&54u16.to_le_bytes());
    h[4..6].copy_from_slice(&mss.to_le_bytes());
    h[6..8].copy_from_slice(&34u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    (h, f)
}

#[test]
fn a_tcp_segment_for_a_nic_without_tso_leaves_cut_over_guest_memory() {
    const OFFLOADS: u64 = 1 << 32 | 1 << 15 | 1 | 1 << 11; // VERSION_1, MRG_RXBUF, CSUM, HOST_TSO4
    let host = 0x50;
    for nic_sums in [false, true] {
        let mut r = Rig::new(if nic_sums { "zt1" } else { "zt0" }, 1, false, 32, 256, 0);
        let caps = dataplane::offload::Caps { csum: nic_sums, ..dataplane::offload::Caps::NONE };
        r.ports[1] = Some(PortView::new("nic", 1, 1, VlanMode::Access(1), 9000).with_caps(caps));
        r.fdb.learn(1, [2, 0, 0, 0, 0, host], 1, 1, 1);
        let q = Virtqueue::Split(SplitQueue::new(SIZE, Gpa(DESC), Gpa(AVAIL), Gpa(USED), (0, 0), &r.a.mem).unwrap());
        let ring = GuestRing::new(Arc::clone(&r.a.mem), q, Interrupt::None, 1, GuestFeatures::from_bits(OFFLOADS).unwrap());
        let mut targets = PortSet::EMPTY;
        targets.insert(1);
        r.rx = CopyOnceRx::new(ring).with_zero_copy(ZeroCopy::new(Lender::new(32), targets, 256, Arc::default()));
        let (hdr, f) = tso_frame(host, 20000, 1448);
        let (a, b) = (BUFS, BUFS + BUF * 8);
        r.a.mem.write(Gpa(a), &hdr).unwrap();
        r.a.mem.write(Gpa(b), &f).unwrap();
        r.a.desc(0, a, HDR as u32, NEXT, 1);
        r.a.desc(1, b, f.len() as u32, 0, 0);
        r.a.offer(0);
        assert_eq!(r.poll(), 1);
        let held = r.take(0);
        assert_eq!(held.len(), 20000usize.div_ceil(1448), "one frame per MSS");
        assert_eq!(r.outcome(Outcome::Lent), 1);
        assert_eq!(r.path(Path::VmNic)[1], 0, "no payload copy");
        let mut payload = Vec::new();
        for (k, m) in held.iter().enumerate() {
            assert_eq!(m.nb_segs(), 2, "a header copy and a slice of the guest's buffer");
            let g = m.to_vec();
            let len = g.len() - 54;
            assert!(len <= 1448);
            assert_eq!(u16::from_be_bytes([g[16], g[17]]) as usize, 40 + len, "IPv4 total length");
            assert_eq!(sum16(&g[14..34], 0), 0xffff, "IPv4 header checksum");
            assert_eq!(u32::from_be_bytes(g[38..42].try_into().unwrap()) as usize, 0x1000 + k * 1448, "sequence");
            let pseudo = sum16(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 6], (20 + len) as u32);
            if nic_sums {
                assert_eq!(m.tx_offload().flags & pmd_bridge::tx_flags::TCP_CKSUM, pmd_bridge::tx_flags::TCP_CKSUM, "the NIC sums");
                assert_eq!(u16::from_be_bytes([g[50], g[51]]), pseudo, "the pseudo-header sum, for the NIC");
            } else {
                assert_eq!(sum16(&g[34..], u32::from(pseudo)), 0xffff, "TCP checksum of segment {k}");
            }
            payload.extend_from_slice(&g[54..]);
        }
        assert_eq!(payload, f[54..], "the payload, in order, intact");
        assert_eq!(r.a.used_idx(), 0, "the chain stays out while any frame is held");
        drop(held);
        r.poll();
        assert_eq!((r.a.used_idx(), r.a.used_heads(0, 1)), (1, vec![0]), "back once every frame is freed");

        // A partial checksum alone: lent whole, summed here if the NIC cannot.
        let (mut hdr, f) = tso_frame(host, 1000, 1448);
        hdr[1..6].fill(0); // no GSO
        r.a.mem.write(Gpa(a), &hdr).unwrap();
        r.a.mem.write(Gpa(b), &f).unwrap();
        r.a.desc(1, b, f.len() as u32, 0, 0);
        r.a.offer(0);
        assert_eq!(r.poll(), 1);
        let held = r.take(0);
        assert_eq!((held.len(), held[0].nb_segs(), r.outcome(Outcome::Lent)), (1, 2, 2));
        let g = held[0].to_vec();
        let pseudo = sum16(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 6], 1020);
        assert_eq!(if nic_sums { u16::from_be_bytes([g[50], g[51]]) } else { sum16(&g[34..], u32::from(pseudo)) }, if nic_sums { pseudo } else { 0xffff });
        assert_eq!(g[..50], f[..50]);
        drop(held);
        r.finish();
    }
}
