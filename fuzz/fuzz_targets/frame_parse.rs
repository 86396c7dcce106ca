//! Ethernet parsing and classification (`fwd::decide`: parse, learn,
//! look up, decide) over a run of arbitrary frames from five ports into one
//! small MAC table. No panic; every decision agrees with the parse, names
//! a port that carries the VLAN, and the table stays within its bounds
//! (entries, per-port limit, per-port counts adding up to the total).
//!
//! Input: records of [ctl][len][len bytes of frame]. ctl bits 0-2: input
//! port (of 5); bits 3-4: seconds to advance (x 150, aging is 300); bit 5:
//! age the table first; bit 6: a TSO frame (segment IP length 8 x len);
//! bit 7: the frame is padded to 1400 + len bytes (only its head is read).
#![no_main]

use dataplane::counters::DropReason;
use dataplane::fdb::Fdb;
use dataplane::fwd::{decide, Decision, PortView};
use dataplane::packet::PacketBuf;
use dataplane::parse::EthHeader;
use dataplane::vlan::{VlanMode, VlanSet};
use libfuzzer_sys::fuzz_target;

const MAX_ENTRIES: usize = 16;
const LIMIT_SLOT: u16 = 1;
const LIMIT: u32 = 4;

struct Pkt<'a> {
    head: &'a [u8],
    len: usize,
    seg: Option<usize>,
}

impl PacketBuf for Pkt<'_> {
    fn frame_len(&self) -> usize {
        self.len
    }
    fn headers(&self) -> &[u8] {
        self.head
    }
    fn segment_ip_len(&self) -> Option<usize> {
        self.seg
    }
}

fn ports() -> Vec<Option<PortView>> {
    let trunk = |v: &[u16]| VlanMode::Trunk(Box::new(VlanSet::new(v)));
    vec![
        Some(PortView::new("p0", 0, 1, VlanMode::Access(10), 1500)),
        Some(PortView::new("p1", 1, 1, VlanMode::Access(10), 1500).with_vm(true)),
        Some(PortView::new("p2", 2, 1, trunk(&[10, 20]), 1500)),
        Some(PortView::new("p3", 3, 1, VlanMode::Access(20), 9000)),
        // A port gone: entries learned on slot 4 must not be followed.
        None,
        Some(PortView::new("p5", 5, 2, trunk(&[1, 10, 4094]), 1500)),
    ]
}

const INPUTS: [usize; 5] = [0, 1, 2, 3, 5];

fuzz_target!(|data: &[u8]| {
    let ports = ports();
    let fdb = Fdb::new(MAX_ENTRIES, 300);
    fdb.set_port_limit(LIMIT_SLOT, LIMIT);
    let (mut now, mut unlearned, mut rest) = (1u32, 0u64, data);
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (head, more) = tail.split_at(n);
        rest = more;
        let input = ports[INPUTS[usize::from(ctl & 7) % INPUTS.len()]].as_ref().expect("an input port");
        now = now.saturating_add(u32::from((ctl >> 3) & 3) * 150);
        if ctl & 0x20 != 0 {
            fdb.age(now);
        }
        let pkt = Pkt {
            head,
            len: if ctl & 0x80 != 0 { 1400 + n } else { n },
            seg: (ctl & 0x40 != 0).then_some(8 * n),
        };
        let before = unlearned;
        let d = decide(&pkt, input, &ports, &fdb, now, &mut unlearned);
        assert!(unlearned - before <= 1);
        let parsed = EthHeader::parse(head);
        match (parsed, d) {
            (Err(r), d) => assert_eq!(d, Decision::Drop(r)),
            (Ok(h), Decision::Drop(r)) => {
                assert!(h.header_len() <= head.len());
                assert!(matches!(r, DropReason::Oversize | DropReason::VlanFiltered | DropReason::SamePort), "{r:?} for a parsed frame");
            }
            (Ok(h), d) => {
                let (out, vlan, tagged) = match d {
                    Decision::Unicast { out, vlan, tagged } => (Some(out), vlan, tagged),
                    Decision::Flood { vlan, tagged } => (None, vlan, tagged),
                    Decision::Drop(_) => unreachable!(),
                };
                assert_eq!(input.vlan.ingress(h.vlan), Ok(vlan));
                assert_eq!(tagged, h.vlan.is_some());
                if let Some(out) = out {
                    assert_ne!(out, input.slot, "unicast back out of its input");
                    let p = ports.get(usize::from(out)).and_then(Option::as_ref).expect("unicast to a live port");
                    assert!(p.vlan.carries(vlan), "unicast to {} outside VLAN {vlan}", p.name);
                    let _ = p.vlan.egress_edit(vlan, tagged);
                }
            }
        }
        assert!(fdb.len() <= MAX_ENTRIES, "{} entries", fdb.len());
        assert!(fdb.port_entries(LIMIT_SLOT) <= LIMIT);
        let counted: u32 = (0..8).map(|s| fdb.port_entries(s)).sum();
        assert_eq!(counted as usize, fdb.len(), "per-port counts against the total");
        assert!(fdb.entries(now).len() <= fdb.len());
    }
});
