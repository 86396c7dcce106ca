//! The copy-once rings over plain memory: what a guest sees, and when.
use super::rx::read_frame_head;
use super::*;
use crate::copy_list::CopyList;
use crate::offload::{Caps, NetHdr};
use crate::virtio_net::{Delivery, FrameSource, NET_HDR_LEN};
use pmd_bridge::guest_mem::{GuestMemory, Gpa};
use crate::virtq::{Chain, Direction, Pop, Virtqueue};

#[test]
fn regression_tso_segments_must_fit_the_mtu_untagged_or_tagged() {
    use crate::fdb::Fdb;
    use crate::fwd::{decide, Decision, PortView};
    use crate::offload::testutil::Spec;
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::vlan::VlanMode;
    // IPv4 (20) and TCP with 12 bytes of options (32): 1448 + 52 = 1500.
    for (vlan, mss, fits) in [(false, 1448u16, true), (false, 1449, false), (true, 1448, true), (true, 1449, false)] {
        let spec = Spec { payload: 20000, vlan, ..Spec::V4 };
        let mut frame = spec.tso_hdr(mss).to_bytes().to_vec();
        frame.extend([0, 0]);
        frame.extend(spec.frame());
        let mut g = TestGuest::new(8);
        g.mem.write(Gpa(DATA), &frame).unwrap();
        g.desc(0, DATA, frame.len() as u32, 0, 0);
        g.offer(0);
        let (mut q, mut c, mut pkt) = (g.queue(), Chain::default(), GuestPkt::default());
        assert_eq!(q.pop(&g.mem, Direction::DeviceReads, &mut c), Ok(Pop::Chain));
        read_frame_head(&g.mem, &c, c.len() - NET_HDR_LEN as u64, Caps::ALL, &mut pkt).unwrap();
        let mode = if vlan { VlanMode::Trunk(Box::new(crate::vlan::VlanSet::new(&[1]))) } else { VlanMode::Access(1) };
        let port = PortView::new("p", 0, 1, mode, 1500);
        let d = decide(&pkt, &port, &[Some(port.clone())], &Fdb::new(64, 300), 1, &mut crate::fwd::BurstMemo::default());
        assert_eq!(d == Decision::Drop(crate::counters::DropReason::Oversize), !fits, "mss {mss}, tagged {vlan}: {d:?}");
    }
}

#[test]
fn regression_a_legacy_guest_is_refused() {
    const VERSION_1: u64 = 1 << 32;
    const MRG_RXBUF: u64 = 1 << 15;
    assert!(GuestFeatures::from_bits(MRG_RXBUF).is_err(), "10- or 12-byte header: not guessed");
    let f = GuestFeatures::from_bits(VERSION_1 | MRG_RXBUF).unwrap();
    assert!(f.mergeable && f.rx == Caps::NONE);
}

/// Two guests in plain memory: `a` transmits `frame` in one chain, `b`
/// offers one 2 KB receive buffer; and `a`'s memory.
fn two_guests(frame: &[u8]) -> (CopyOnceRx, CopyOnceTx, Arc<GuestMemory>) {
    use crate::virtq::test_guest::{TestGuest, DATA};
    use crate::virtq::VRING_DESC_F_WRITE;
    const VERSION_1: u64 = 1 << 32;
    const MRG_RXBUF: u64 = 1 << 15;
    let f = GuestFeatures::from_bits(VERSION_1 | MRG_RXBUF).unwrap();
    let mut a = TestGuest::new(8);
    let mut bytes = vec![0u8; NET_HDR_LEN];
    bytes.extend_from_slice(frame);
    a.mem.write(Gpa(DATA), &bytes).unwrap();
    a.desc(0, DATA, bytes.len() as u32, 0, 0);
    a.offer(0);
    let mut b = TestGuest::new(8);
    b.desc(0, DATA, 2048, VRING_DESC_F_WRITE, 0);
    b.offer(0);
    let (qa, qb) = (Virtqueue::Split(a.queue()), Virtqueue::Split(b.queue()));
    let a_mem = Arc::new(a.mem);
    let rx = CopyOnceRx::new(GuestRing::new(Arc::clone(&a_mem), qa, Interrupt::None, 1, f));
    let tx = CopyOnceTx::new(GuestRing::new(Arc::new(b.mem), qb, Interrupt::None, 0, f), 0);
    (rx, tx, a_mem)
}

fn used_idx(mem: &GuestMemory) -> u16 {
    mem.read_u16(Gpa(crate::virtq::test_guest::USED + 2)).unwrap()
}

fn received(mem: &GuestMemory, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    mem.read(Gpa(crate::virtq::test_guest::DATA + NET_HDR_LEN as u64), &mut got).unwrap();
    got
}

#[test]
fn regression_no_used_index_is_published_before_its_copies_run() {
    let frame: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let (mut a, mut b, a_mem) = two_guests(&frame);
    let mut pkts = [GuestPkt::default(); 4];
    let drops = crate::counters::PerReason::default();
    let burst = a.recv(&mut pkts, &drops).expect("one frame");
    let mut copies = CopyList::default();
    assert!(matches!(burst.deliver(0, &mut b, &mut copies, 7).0, Delivery::Done { .. }));
    assert_eq!(used_idx(b.mem()), 0, "an entry listed, its payload not copied: not visible");
    assert_ne!(received(b.mem(), frame.len()), frame);

    let (done, copied) = copies.run(Some(burst.mem()), |out| (out == 7).then_some(b.mem()));
    copied.unwrap();
    assert_eq!(used_idx(b.mem()), 0, "the copies ran; publishing is a step of its own");
    b.publish(&done);
    assert_eq!((used_idx(b.mem()), received(b.mem(), frame.len())), (1, frame.clone()), "the entry with its bytes");
    assert_eq!(used_idx(&a_mem), 0, "the sender's chain is still lent");
    burst.commit(&done);
    assert_eq!(used_idx(&a_mem), 1);
}

#[test]
fn a_frame_copied_at_once_waits_for_the_bursts_publish_too() {
    let (_, mut b, _) = two_guests(b"unused");
    let frame = [0x5au8; 200];
    let d = b.deliver_one(&FrameSource { net_hdr: [0; NetHdr::LEN], head: &frame, tail: None }, 0, None);
    assert!(matches!(d, Delivery::Done { .. }));
    assert_eq!(used_idx(b.mem()), 0, "an mbuf sent mid-burst must not publish entries listed before it");
    let mut copies = CopyList::default();
    let (done, _) = copies.run(None, |_| None);
    b.publish(&done);
    assert_eq!((used_idx(b.mem()), received(b.mem(), 200)), (1, frame.to_vec()));
}
