//! OpenFlow's flow table in the data path (the protocol is vswitch's).
//!
//! A plan without flows has no `PmdFlows`: classification then costs one
//! branch per burst and takes the L2 path as before. With flows, each
//! packet's key goes through the thread's exact-match cache into the
//! snapshot (`table`); a flow whose actions are just NORMAL (and a table
//! miss) still takes the L2 path, any other runs its actions (`exec`).
//!
//! Packets for the controller leave through a ring per thread (one
//! writer, the thread; one reader, the control side): a full ring drops
//! and counts, the thread never waits. PACKET_OUT comes the other way on
//! a ring the control side writes and the first thread reads.
use std::sync::Arc;

use pmd_bridge::Mbuf;

use crate::capture::CaptureRing;
use crate::counters::DropReason;
use crate::fdb::Fdb;
use crate::fwd::{decide, BurstMemo, Decision, PortView};
use crate::packet::PacketBuf;
use crate::parse::ETH_HLEN;

mod exec;
pub mod key;
pub mod table;

pub use key::{FlowKey, Match};
pub use table::{port_no, Action, Emc, FlowEntry, FlowStats, FlowTable, Hit};

/// Words of a thread's ring to the controller: 512 KiB, some 350 frames
/// of 1500 bytes.
pub const PACKET_IN_WORDS: usize = 1 << 16;
/// Actions one PACKET_OUT may carry.
pub const MAX_INJECT_ACTIONS: usize = 16;
/// Bytes before a frame in a PACKET_IN record: in_port, reason, padding.
const META: usize = 4;
/// The input port of a PACKET_OUT from the controller itself.
pub const FROM_CONTROLLER: u16 = u16::MAX;

/// Why a packet went to the controller (OpenFlow's packet-in reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    NoMatch = 0,
    Action = 1,
}

/// One thread's flow state, in its plan.
pub struct PmdFlows {
    pub table: Arc<FlowTable>,
    emc: Emc,
    /// To the controller (this thread writes).
    pub packet_in: Arc<CaptureRing>,
    /// PACKET_OUTs (the control side writes, this thread reads); the
    /// first thread's only.
    pub inject: Option<Arc<CaptureRing>>,
}

impl PmdFlows {
    pub fn new(table: Arc<FlowTable>, packet_in: Arc<CaptureRing>, inject: Option<Arc<CaptureRing>>) -> PmdFlows {
        PmdFlows { table, emc: Emc::default(), packet_in, inject }
    }

    /// `fwd::decide`, with the flow table in front.
    #[inline]
    pub fn decide<P: PacketBuf + ?Sized>(&mut self, pkt: &P, input: &PortView, ports: &[Option<PortView>], fdb: &Fdb, now: u32, memo: &mut BurstMemo) -> Decision {
        if pkt.headers().len() < ETH_HLEN {
            return Decision::Drop(DropReason::Runt);
        }
        let k = FlowKey::extract(pkt.headers(), port_no(input.slot));
        match self.emc.classify(&self.table, &k, pkt.frame_len()) {
            Hit::Normal => decide(pkt, input, ports, fdb, now, memo),
            Hit::Flow(i) => Decision::Flow(i),
        }
    }
}

/// A frame for the controller, as the control side reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct PacketIn<'a> {
    pub in_port: u16,
    pub reason: Reason,
    pub cookie: u64,
    pub total_len: usize,
    pub data: &'a [u8],
}

/// Writes `m` (its first `max_len` bytes) for the controller; false if
/// the ring is full (counted in it).
pub fn push_packet_in(ring: &CaptureRing, m: &Mbuf, in_slot: u16, reason: Reason, cookie: u64, max_len: u16) -> bool {
    let [a, b] = port_no(in_slot).to_le_bytes();
    let meta = [a, b, reason as u8, 0];
    let caplen = m.len().min(max_len.into());
    ring.push(cookie, false, META + m.len(), META + caplen, std::iter::once(&meta[..]).chain(m.segments()))
}

/// Reads every frame for the controller from `ring`.
pub fn drain_packet_in(ring: &CaptureRing, scratch: &mut Vec<u8>, mut f: impl FnMut(PacketIn)) {
    ring.drain(scratch, |r| {
        if r.data.len() < META {
            return;
        }
        let reason = if r.data[2] == Reason::NoMatch as u8 { Reason::NoMatch } else { Reason::Action };
        f(PacketIn {
            in_port: u16::from_le_bytes([r.data[0], r.data[1]]),
            reason,
            cookie: r.tsc,
            total_len: (r.orig_len as usize).saturating_sub(META),
            data: &r.data[META..],
        });
    });
}

/// Writes a PACKET_OUT for the first thread: `frame` from `in_slot`
/// (`FROM_CONTROLLER`), with its actions (at most `MAX_INJECT_ACTIONS`).
/// The control side is the ring's one writer. False if it is full.
pub fn push_inject(ring: &CaptureRing, in_slot: u16, actions: &[Action], frame: &[u8]) -> bool {
    assert!(actions.len() <= MAX_INJECT_ACTIONS, "checked by the caller");
    let words: Vec<u8> = actions.iter().flat_map(|a| a.to_word().to_le_bytes()).collect();
    let stamp = u64::from(in_slot) | (actions.len() as u64) << 16;
    let len = words.len() + frame.len();
    ring.push(stamp, false, len, len, [&words[..], frame].into_iter())
}
