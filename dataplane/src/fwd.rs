//! Classification: parse, learn the source, look up the destination, decide.
//!
//! This is pass 1 over a burst: it only decides (`Decision` per packet) and
//! moves nothing, so pass 2 (the datapath's) can move the whole burst at
//! once. Each packet is learned before it is forwarded, in burst order.
use std::sync::Arc;

use crate::counters::DropReason;
use crate::fdb::{Fdb, Learn};
use crate::offload::Caps;
use crate::packet::PacketBuf;
use crate::parse::{is_multicast, EthHeader, ETHERTYPE_VLAN, ETH_HLEN, VLAN_HLEN};
use crate::police::Policer;
use crate::vlan::VlanMode;
use crate::vxlan::Underlay;

/// What a PMD thread knows of one port: immutable, swapped as a whole.
#[derive(Clone, Debug)]
pub struct PortView {
    pub name: String,
    pub slot: u16,
    /// Bumped each time a slot is reused, so MAC entries of an old port
    /// sharing the slot number never match.
    pub gen: u16,
    pub vlan: VlanMode,
    /// Longest frame accepted on input (MTU + Ethernet header + a tag).
    pub max_frame: usize,
    /// The L3 MTU.
    pub mtu: usize,
    /// A VM's port whose frames are copied in and out by rte_vhost (one
    /// payload copy each way), as opposed to a NIC's (DMA, no copy).
    pub vm: bool,
    /// The offloads the port takes whole on output (a guest's receive
    /// features, a NIC's transmit offloads); the rest is done in software.
    pub caps: Caps,
    /// Ingress policing: the port's token bucket, shared by its rx queues.
    pub policer: Option<Arc<Policer>>,
    /// An underlay port's VXLAN tunnels (`vxlan::rx`).
    pub underlay: Option<Arc<Underlay>>,
}

impl PortView {
    pub fn new(name: &str, slot: u16, gen: u16, vlan: VlanMode, mtu: u16) -> PortView {
        let max_frame = mtu as usize + ETH_HLEN + VLAN_HLEN;
        PortView { name: name.to_string(), slot, gen, vlan, max_frame, mtu: mtu as usize, vm: false, caps: Caps::NONE, policer: None, underlay: None }
    }

    pub fn with_policer(mut self, policer: Option<Arc<Policer>>) -> PortView {
        self.policer = policer;
        self
    }

    pub fn with_caps(mut self, caps: Caps) -> PortView {
        self.caps = caps;
        self
    }

    pub fn with_underlay(mut self, underlay: Option<Arc<Underlay>>) -> PortView {
        self.underlay = underlay;
        self
    }

    pub fn with_vm(mut self, vm: bool) -> PortView {
        self.vm = vm;
        self
    }
}

/// Every port by slot.
pub type PortTable = Arc<Vec<Option<PortView>>>;

/// Pass 1's verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Drop(DropReason),
    Unicast { out: u16, vlan: u16, tagged: bool },
    Flood { vlan: u16, tagged: bool },
    /// An OpenFlow flow's actions (`flow`), by its index in the table.
    Flow(u32),
}

/// What pass 1 keeps between the packets of one burst from one port: the
/// sources the MAC table could not take, the last source learned and
/// destination looked up, and the last frame's decision. A burst's frames
/// are mostly of one flow and would repeat the same table work each (VPP's
/// l2-learn and l2-fwd keep the same one-entry caches). A learn that stored or moved an entry
/// forgets the lookup: the table changed under it. Other threads' changes
/// show from the next burst on.
#[derive(Default)]
pub struct BurstMemo {
    /// Frames whose source the MAC table could not take.
    pub unlearned: u64,
    /// (VLAN, source, input slot) last learned, and whether the table was
    /// full for it.
    learned: Option<(u16, [u8; 6], u16, bool)>,
    /// (VLAN, destination) last looked up, and what the table said.
    looked: Option<(u16, [u8; 6], Option<Station>)>,
    /// The last frame decided: its key, its decision, and whether its
    /// source went unlearned. A flow's next frame is decided by one
    /// comparison (`--bench vm2vm` 64 B: 53 instructions a frame fewer).
    last: Option<(FrameKey, Decision, bool)>,
}

/// What decides a frame of a size the input takes, taken from its bytes
/// as they are: its addresses and EtherType, a tag's TCI and inner
/// EtherType, and its input. Frames with the same key parse alike, so a
/// frame like the last is decided without being parsed (`--bench vm2vm`
/// 64 B: 21 instructions a frame fewer than a key of the parsed header).
#[derive(Clone, Copy, PartialEq, Eq)]
struct FrameKey(u64, u64, u32);

impl FrameKey {
    /// None: a frame too short for its headers, parsed every time.
    #[inline(always)]
    fn of(head: &[u8], slot: u16) -> Option<FrameKey> {
        let b: &[u8; ETH_HLEN] = head.get(..ETH_HLEN)?.try_into().ok()?;
        let addresses = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let rest = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], 0, 0]) | u64::from(slot) << 48;
        let tag = if u16::from_be_bytes([b[12], b[13]]) == ETHERTYPE_VLAN {
            let t: &[u8; VLAN_HLEN] = head.get(ETH_HLEN..ETH_HLEN + VLAN_HLEN)?.try_into().ok()?;
            u32::from_le_bytes(*t)
        } else {
            0
        };
        Some(FrameKey(addresses, rest, tag))
    }
}

/// Where the MAC table puts a station: (slot, generation).
type Station = (u16, u16);

impl BurstMemo {
    /// Learns `src`, unless this burst just did; whether the table was full.
    #[inline]
    fn learn(&mut self, fdb: &Fdb, vlan: u16, src: [u8; 6], input: &PortView, now: u32) -> bool {
        if let Some((v, m, slot, full)) = self.learned {
            if v == vlan && m == src && slot == input.slot {
                return full;
            }
        }
        let r = fdb.learn(vlan, src, input.slot, input.gen, now);
        if r != Learn::Known {
            self.looked = None;
        }
        // A way another writer held: the next frame tries again.
        self.learned = (r != Learn::Busy).then_some((vlan, src, input.slot, r == Learn::Full));
        r == Learn::Full
    }

    /// Looks `dst` up, unless this burst just did (and learned nothing new
    /// since).
    #[inline]
    fn lookup(&mut self, fdb: &Fdb, vlan: u16, dst: [u8; 6], now: u32) -> Option<Station> {
        if let Some((v, m, found)) = self.looked {
            if v == vlan && m == dst {
                return found;
            }
        }
        let found = fdb.lookup(vlan, dst, now);
        self.looked = Some((vlan, dst, found));
        found
    }
}

/// Decides one packet from `input` (`memo`: this burst's so far). A source
/// the MAC table cannot take (full, or the port at its `mac_limit`) is
/// counted in `memo.unlearned` and the frame forwarded all the same:
/// refusing it would let one port cut every new station off.
#[inline(always)]
pub fn decide<P: PacketBuf + ?Sized>(pkt: &P, input: &PortView, ports: &[Option<PortView>], fdb: &Fdb, now: u32, memo: &mut BurstMemo) -> Decision {
    // A TCP segment to be cut: each piece must fit the MTU (with or
    // without a tag); any other frame, MTU plus its L2 header.
    let too_big = || match pkt.segment_ip_len() {
        Some(ip) => ip > input.mtu,
        None => pkt.frame_len() > input.max_frame,
    };
    let key = FrameKey::of(pkt.headers(), input.slot);
    if let (Some(key), Some((k, d, unlearned))) = (key, memo.last) {
        // Parsed alike, it would pass the parse as the last did.
        if k == key {
            if too_big() {
                return Decision::Drop(DropReason::Oversize);
            }
            memo.unlearned += u64::from(unlearned);
            return d;
        }
    }
    let hdr = match EthHeader::parse(pkt.headers()) {
        Ok(h) => h,
        Err(r) => return Decision::Drop(r),
    };
    if too_big() {
        return Decision::Drop(DropReason::Oversize);
    }
    decide_new(&hdr, key, input, ports, fdb, now, memo)
}

/// `decide` for a frame unlike the last (out of line: the loop over a
/// burst keeps the short way to the memo inline).
#[inline(never)]
fn decide_new(hdr: &EthHeader, key: Option<FrameKey>, input: &PortView, ports: &[Option<PortView>], fdb: &Fdb, now: u32, memo: &mut BurstMemo) -> Decision {
    let before = memo.unlearned;
    let d = forward(hdr, input, ports, fdb, now, memo);
    // Not after a learn another writer held off: the next frame tries again.
    // (A frame dropped before any learn of its burst is decided again, cheaply.)
    if let Some(key) = key.filter(|_| memo.learned.is_some()) {
        memo.last = Some((key, d, memo.unlearned != before));
    }
    d
}

/// `decide` for a frame of a size its input takes, from its headers.
#[inline(always)]
fn forward(hdr: &EthHeader, input: &PortView, ports: &[Option<PortView>], fdb: &Fdb, now: u32, memo: &mut BurstMemo) -> Decision {
    let vlan = match input.vlan.ingress(hdr.vlan) {
        Ok(v) => v,
        Err(r) => return Decision::Drop(r),
    };
    let tagged = hdr.vlan.is_some();
    if memo.learn(fdb, vlan, hdr.src, input, now) {
        memo.unlearned += 1;
    }
    if is_multicast(&hdr.dst) {
        return Decision::Flood { vlan, tagged };
    }
    match memo.lookup(fdb, vlan, hdr.dst, now) {
        Some((slot, gen)) => match ports.get(slot as usize) {
            Some(Some(p)) if p.gen == gen && p.vlan.carries(vlan) => {
                if slot == input.slot {
                    Decision::Drop(DropReason::SamePort)
                } else {
                    Decision::Unicast { out: slot, vlan, tagged }
                }
            }
            // Learned on a port that is gone or no longer carries the VLAN.
            _ => Decision::Flood { vlan, tagged },
        },
        None => Decision::Flood { vlan, tagged },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vlan::VlanSet;

    fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        if let Some(t) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(len.max(f.len()), 0xab);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    fn decide(pkt: &[u8], input: &PortView, ports: &[Option<PortView>], fdb: &Fdb, now: u32) -> Decision {
        super::decide(pkt, input, ports, fdb, now, &mut BurstMemo::default())
    }

    fn ports() -> Vec<Option<PortView>> {
        vec![
            Some(PortView::new("p0", 0, 1, VlanMode::Access(10), 1500)),
            Some(PortView::new("p1", 1, 1, VlanMode::Access(10), 1500)),
            Some(PortView::new("p2", 2, 1, VlanMode::Trunk(Box::new(VlanSet::new(&[10, 20]))), 1500)),
            Some(PortView::new("p3", 3, 1, VlanMode::Access(20), 1500)),
        ]
    }

    #[test]
    fn learn_then_unicast() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        assert_eq!(decide(&frame(B, A, None, 60)[..], p(0), &ports, &fdb, 1), Decision::Flood { vlan: 10, tagged: false });
        assert_eq!(
            decide(&frame(A, B, Some(10), 60)[..], p(2), &ports, &fdb, 1),
            Decision::Unicast { out: 0, vlan: 10, tagged: true }
        );
        assert_eq!(decide(&frame(B, A, None, 60)[..], p(0), &ports, &fdb, 2), Decision::Unicast { out: 2, vlan: 10, tagged: false });
        assert_eq!(decide(&frame(A, B, Some(10), 60)[..], p(2), &ports, &fdb, 2).clone(), Decision::Unicast { out: 0, vlan: 10, tagged: true });
    }

    #[test]
    fn broadcast_floods_and_same_port_drops() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        assert_eq!(decide(&frame(BCAST, A, None, 60)[..], p(0), &ports, &fdb, 1), Decision::Flood { vlan: 10, tagged: false });
        assert_eq!(decide(&frame(BCAST, B, None, 60)[..], p(0), &ports, &fdb, 1), Decision::Flood { vlan: 10, tagged: false });
        assert_eq!(decide(&frame(A, B, None, 60)[..], p(0), &ports, &fdb, 1), Decision::Drop(DropReason::SamePort));
    }

    #[test]
    fn drops_by_reason() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        assert_eq!(decide(&frame(B, A, None, 60)[..13], p(0), &ports, &fdb, 1), Decision::Drop(DropReason::Runt));
        assert_eq!(decide(&frame(B, A, None, 1519)[..], p(0), &ports, &fdb, 1), Decision::Drop(DropReason::Oversize));
        assert_eq!(decide(&frame(B, A, None, 1518)[..], p(0), &ports, &fdb, 1), Decision::Flood { vlan: 10, tagged: false });
        assert_eq!(decide(&frame(B, A, Some(10), 60)[..], p(0), &ports, &fdb, 1), Decision::Drop(DropReason::VlanFiltered));
        assert_eq!(decide(&frame(B, A, Some(30), 60)[..], p(2), &ports, &fdb, 1), Decision::Drop(DropReason::VlanFiltered));
        let mut bad_src = A;
        bad_src[0] |= 1;
        assert_eq!(decide(&frame(B, bad_src, None, 60)[..], p(0), &ports, &fdb, 1), Decision::Drop(DropReason::Malformed));
    }

    #[test]
    fn vlans_are_separate() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        decide(&frame(BCAST, A, None, 60)[..], p(0), &ports, &fdb, 1); // A learned in VLAN 10
        assert_eq!(decide(&frame(A, B, None, 60)[..], p(3), &ports, &fdb, 1), Decision::Flood { vlan: 20, tagged: false });
    }

    #[test]
    fn a_full_table_forwards_new_sources_unlearned() {
        let (ports, fdb) = (ports(), Fdb::new(16, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        let mut memo = BurstMemo::default();
        let mac = |i: u8| [2, 0, 0, 0, 1, i];
        for i in 0..64u8 {
            let d = super::decide(&frame(BCAST, mac(i), None, 60)[..], p(0), &ports, &fdb, 1, &mut memo);
            assert_eq!(d, Decision::Flood { vlan: 10, tagged: false }, "forwarded, learned or not");
        }
        // At most 16 learned; fewer when the sources' buckets fill first
        // (the hash is keyed at random: about one run in 300).
        let (learned, unlearned) = (fdb.len(), memo.unlearned);
        assert!(learned <= 16 && unlearned == 64 - learned as u64, "{learned} learned, {unlearned} not");
        // A refused source again, within the burst: counted again.
        let refused = (0..64u8).find(|&i| fdb.lookup(10, mac(i), 1).is_none()).expect("a source refused");
        super::decide(&frame(BCAST, mac(refused), None, 60)[..], p(0), &ports, &fdb, 1, &mut memo);
        assert_eq!(memo.unlearned, unlearned + 1, "each frame of a refused source is counted");
        // And again right after: decided from the memo, counted all the same.
        super::decide(&frame(BCAST, mac(refused), None, 60)[..], p(0), &ports, &fdb, 1, &mut memo);
        assert_eq!(memo.unlearned, unlearned + 2, "a frame decided from the memo is counted too");
    }

    #[test]
    fn regression_one_port_cannot_take_the_table() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        fdb.set_port_limit(0, 8);
        let mut memo = BurstMemo::default();
        for i in 0..200u8 {
            super::decide(&frame(BCAST, [2, 0, 0, 0, 1, i], None, 60)[..], p(0), &ports, &fdb, 1, &mut memo);
        }
        assert_eq!((fdb.port_entries(0), memo.unlearned), (8, 192), "port 0 holds its limit, the rest forwarded unlearned");
        // Another port still learns, and is reached by unicast.
        decide(&frame(BCAST, B, None, 60)[..], p(1), &ports, &fdb, 1);
        assert_eq!(decide(&frame(B, A, None, 60)[..], p(0), &ports, &fdb, 1), Decision::Unicast { out: 1, vlan: 10, tagged: false });
    }

    /// Within one burst: a flow's frames decide as without the memo, and a
    /// source learned mid-burst is seen by the lookups after it.
    #[test]
    fn a_burst_remembers_its_flow_until_the_table_changes() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        let mut memo = BurstMemo::default();
        let mut burst = |f: Vec<u8>| super::decide(&f[..], p(0), &ports, &fdb, 1, &mut memo);
        assert_eq!(burst(frame(B, A, None, 60)), Decision::Flood { vlan: 10, tagged: false }, "B unknown");
        assert_eq!(burst(frame(B, A, None, 60)), Decision::Flood { vlan: 10, tagged: false });
        // B appears behind this same port: the table changed, so A's next
        // frame to B is dropped as a hairpin, not flooded from memory.
        assert_eq!(burst(frame(BCAST, B, None, 60)), Decision::Flood { vlan: 10, tagged: false });
        assert_eq!(burst(frame(B, A, None, 60)), Decision::Drop(DropReason::SamePort));
        assert_eq!(fdb.lookup(10, A, 1), Some((0, 1)), "A learned once, as without the memo");
    }

    /// The whole-frame memo: a frame like the last is decided alike, but
    /// its size is checked anew, and a tag or an input of its own is
    /// another frame.
    #[test]
    fn a_frame_like_the_last_is_decided_alike_but_its_size_and_tag_count() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        decide(&frame(BCAST, B, None, 60)[..], p(1), &ports, &fdb, 1); // B learned in VLAN 10
        let mut memo = BurstMemo::default();
        let mut burst = |f: Vec<u8>, input: usize| super::decide(&f[..], p(input), &ports, &fdb, 1, &mut memo);
        let to_b = Decision::Unicast { out: 1, vlan: 10, tagged: true };
        assert_eq!(burst(frame(B, A, Some(10), 60), 2), to_b);
        assert_eq!(burst(frame(B, A, Some(10), 1519), 2), Decision::Drop(DropReason::Oversize), "its size is checked anew");
        assert_eq!(burst(frame(B, A, Some(10), 1518), 2), to_b);
        assert_eq!(burst(frame(B, A, Some(20), 60), 2), Decision::Flood { vlan: 20, tagged: true }, "B is not known in VLAN 20");
        assert_eq!(burst(frame(B, A, None, 60), 2), Decision::Drop(DropReason::VlanFiltered), "the trunk takes no untagged frame");
        assert_eq!(burst(frame(B, A, None, 60), 0), Decision::Unicast { out: 1, vlan: 10, tagged: false }, "another input");
        assert_eq!(burst(frame(B, A, Some(10), 60), 2), to_b);
    }

    /// The memo's key is the frame's bytes up to its EtherType after any
    /// tag: a frame that matches the last in its addresses and tag but
    /// would fail the parse (a stacked tag, a tag cut short) is parsed and
    /// dropped, not decided from memory.
    #[test]
    fn a_frame_like_the_last_but_malformed_is_parsed() {
        let (ports, fdb) = (ports(), Fdb::new(64, 300));
        let p = |i: usize| ports[i].as_ref().unwrap();
        decide(&frame(BCAST, B, None, 60)[..], p(1), &ports, &fdb, 1);
        let mut memo = BurstMemo::default();
        let mut burst = |f: &[u8]| super::decide(f, p(2), &ports, &fdb, 1, &mut memo);
        let good = frame(B, A, Some(10), 60);
        let to_b = Decision::Unicast { out: 1, vlan: 10, tagged: true };
        assert_eq!(burst(&good), to_b);
        let mut stacked = good.clone();
        stacked[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(burst(&stacked), Decision::Drop(DropReason::Malformed), "a second tag");
        assert_eq!(burst(&good), to_b);
        assert_eq!(burst(&good[..17]), Decision::Drop(DropReason::Runt), "a tag cut short");
        assert_eq!(burst(&good[..18]), to_b);
        let mut pcp = good.clone();
        pcp[14] |= 0xe0;
        assert_eq!(burst(&pcp), to_b, "another priority, the same VLAN");
    }
}
