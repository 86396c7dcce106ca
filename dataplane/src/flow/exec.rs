//! A flow's actions on one packet in an mbuf, in order, in the egress
//! stage: outputs are batched with the burst's other packets, edits never
//! write a byte another output holds (a shared packet gets a private
//! header in front, as `tag_edit` does), NORMAL hands the packet to the
//! L2 path as it is at that point.
use std::sync::atomic::Ordering::Relaxed;

use pmd_bridge::{Mbuf, Mempool};

use super::{push_packet_in, Action, PmdFlows, Reason, FROM_CONTROLLER, MAX_INJECT_ACTIONS};
use crate::counters::{bump, DropReason, Path, MAX_PORTS};
use crate::egress::{Egress, Tally};
use crate::fwd::{decide, BurstMemo, Decision};
use crate::parse::{Mac, ETHERTYPE_VLAN, ETH_HLEN, VLAN_HLEN};
use crate::tag_edit;
use crate::vlan::TagEdit;

const MACS: usize = 12;

fn tagged(m: &Mbuf) -> Option<u16> {
    let d = m.data();
    (d.len() >= ETH_HLEN + VLAN_HLEN && u16::from_be_bytes([d[12], d[13]]) == ETHERTYPE_VLAN).then(|| u16::from_be_bytes([d[14], d[15]]))
}

/// Writes `mac` at `at` (0: destination, 6: source).
fn set_mac(mut m: Mbuf, at: usize, mac: Mac, pool: &Mempool) -> Result<Mbuf, DropReason> {
    if m.data().len() < MACS {
        return Err(DropReason::Runt);
    }
    if let Some(d) = m.data_mut() {
        d[at..at + 6].copy_from_slice(&mac);
        return Ok(m);
    }
    let mut macs: [u8; MACS] = m.data()[..MACS].try_into().expect("length checked");
    macs[at..at + 6].copy_from_slice(&mac);
    let mut hdr = pool.alloc().ok_or(DropReason::NoMbuf)?;
    hdr.fill(&macs).ok_or(DropReason::NoMbuf)?;
    let mut rest = m.clone_indirect(pool).ok_or(DropReason::NoMbuf)?;
    rest.adj(MACS as u16);
    let off = m.tx_offload();
    hdr.chain(rest).map_err(|_| DropReason::NoMbuf)?;
    if off.flags != 0 && !hdr.set_tx_offload(off) {
        return Err(DropReason::Malformed);
    }
    Ok(hdr)
}

/// A tagged packet's VLAN id (its priority kept).
fn set_vid(mut m: Mbuf, vid: u16, pool: &Mempool) -> Result<Mbuf, DropReason> {
    let Some(tci) = tagged(&m) else { return Ok(m) };
    let tci = tci & 0xf000 | vid & 0x0fff;
    if let Some(d) = m.data_mut() {
        d[14..16].copy_from_slice(&tci.to_be_bytes());
        return Ok(m);
    }
    let m = tag_edit::apply(m, TagEdit::Pop, pool)?;
    tag_edit::apply(m, TagEdit::Push(tci), pool)
}

impl Egress<'_> {
    /// Flow `flow`'s actions on `m`, received on `in_slot`.
    pub(crate) fn run_flow(&mut self, in_slot: u16, m: Mbuf, flow: u32, t: &mut Tally) {
        let Some(f) = self.flows.take() else {
            self.discard(m);
            return;
        };
        let e = f.table.flow(flow);
        let reason = if e.table_miss { Reason::NoMatch } else { Reason::Action };
        self.run_actions(f, in_slot, m, &e.actions, reason, e.cookie, t);
        self.flows = Some(f);
    }

    /// Runs `actions` (`self.flows` is out meanwhile: `f`).
    #[allow(clippy::too_many_arguments)]
    fn run_actions(&mut self, f: &PmdFlows, in_slot: u16, mut m: Mbuf, actions: &[Action], reason: Reason, cookie: u64, t: &mut Tally) {
        // A PACKET_OUT may come from the controller: no input port.
        let input_vm = self.ports.get(in_slot as usize).and_then(Option::as_ref).is_some_and(|p| p.vm);
        let mut sent = false;
        for &a in actions {
            let edited = match a {
                Action::Output(p) => {
                    let out = p.wrapping_sub(1);
                    if out != in_slot {
                        self.output(out, m.share(), input_vm, t);
                    }
                    sent = true;
                    continue;
                }
                Action::InPort => {
                    self.output(in_slot, m.share(), input_vm, t);
                    sent = true;
                    continue;
                }
                Action::Flood | Action::All => {
                    for out in 0..MAX_PORTS as u16 {
                        if out != in_slot && self.tx.get(out as usize).is_some_and(Option::is_some) {
                            self.output(out, m.share(), input_vm, t);
                        }
                    }
                    sent = true;
                    continue;
                }
                Action::Normal => {
                    self.normal(in_slot, m.share(), t);
                    sent = true;
                    continue;
                }
                Action::Controller(max_len) => {
                    push_packet_in(&f.packet_in, &m, in_slot, reason, cookie, max_len);
                    sent = true;
                    continue;
                }
                Action::Table => continue,
                Action::PushVlan => {
                    let vid = tagged(&m).unwrap_or(0);
                    tag_edit::apply(m, TagEdit::Push(vid), self.pool)
                }
                Action::PopVlan if tagged(&m).is_some() => tag_edit::apply(m, TagEdit::Pop, self.pool),
                Action::PopVlan => Ok(m),
                Action::SetVlanVid(v) => set_vid(m, v, self.pool),
                Action::SetEthDst(mac) => set_mac(m, 0, mac, self.pool),
                Action::SetEthSrc(mac) => set_mac(m, 6, mac, self.pool),
            };
            match edited {
                Ok(e) => m = e,
                Err(r) => {
                    t.drops[r as usize] += 1;
                    return;
                }
            }
        }
        if sent {
            t.forwarded += 1;
        } else {
            t.drops[DropReason::FlowDrop as usize] += 1;
        }
        self.discard(m);
    }

    /// To one port as the packet is: no VLAN edit of the port's own.
    fn output(&mut self, out: u16, m: Mbuf, input_vm: bool, t: &mut Tally) {
        let Some(port) = self.ports.get(out as usize).and_then(Option::as_ref) else {
            self.discard(m);
            return;
        };
        let path = Path::of(input_vm, port.vm);
        t.paths[path as usize][0] += 1;
        self.send_to(out, port.caps, m, path, t);
    }

    /// The L2 path for a packet a flow sent to NORMAL.
    fn normal(&mut self, in_slot: u16, m: Mbuf, t: &mut Tally) {
        let Some(input) = self.ports.get(in_slot as usize).and_then(Option::as_ref) else {
            self.discard(m);
            return;
        };
        let mut memo = BurstMemo::default();
        let d = decide(&m, input, self.ports, self.fdb, self.now, &mut memo);
        bump(&self.counters.ports[in_slot as usize].unlearned, memo.unlearned);
        match d {
            Decision::Unicast { out, vlan, tagged } => {
                let path = Path::of(input.vm, self.is_vm(out));
                t.paths[path as usize][0] += 1;
                self.emit(out, m, vlan, tagged, path, t);
            }
            Decision::Flood { vlan, tagged } => {
                t.paths[Path::Flood as usize][0] += 1;
                self.flood(in_slot, m, vlan, tagged, t);
            }
            Decision::Drop(r) => {
                t.drops[r as usize] += 1;
                self.discard(m);
            }
            Decision::Flow(_) => self.discard(m),
        }
    }

    /// The PACKET_OUTs the control side wrote, if this thread reads them.
    pub fn forward_injected(mut self) {
        let Some(f) = self.flows.take() else { return };
        let Some(ring) = f.inject.as_ref().filter(|r| !r.is_empty()).cloned() else {
            self.flows = Some(f);
            return;
        };
        self.flows = Some(f);
        let mut t = Tally::default();
        let mut scratch = std::mem::take(&mut self.out.scratch);
        ring.drain(&mut scratch, |r| {
            let in_slot = r.tsc as u16;
            let n = ((r.tsc >> 16) as usize).min(MAX_INJECT_ACTIONS);
            let Some(frame) = r.data.get(n * 8..) else { return };
            let mut actions = [Action::Table; MAX_INJECT_ACTIONS];
            for (a, w) in actions.iter_mut().zip(r.data.chunks_exact(8)) {
                *a = Action::from_word(u64::from_le_bytes(w.try_into().expect("8 bytes"))).unwrap_or(Action::Table);
            }
            let Some(m) = self.pool.alloc_from(frame) else { return };
            self.inject_one(in_slot, m, &actions[..n], &mut t);
        });
        self.out.scratch = scratch;
        // Injected packets were received on no port: none of their
        // dispositions is an input's.
        t.forwarded = 0;
        t.drops = Default::default();
        let _ = self.finish(None, 0, &mut t);
    }

    fn inject_one(&mut self, in_slot: u16, m: Mbuf, actions: &[Action], t: &mut Tally) {
        let f = self.flows.take().expect("checked by the caller");
        let port = if in_slot == FROM_CONTROLLER { 0 } else { super::port_no(in_slot) };
        let hit = actions.contains(&Action::Table).then(|| f.table.lookup(&super::FlowKey::extract(m.data(), port)));
        match hit {
            None => self.run_actions(f, in_slot, m, actions, Reason::Action, u64::MAX, t),
            Some(Some(i)) => {
                let e = f.table.flow(i);
                let reason = if e.table_miss { Reason::NoMatch } else { Reason::Action };
                e.stats.packets.fetch_add(1, Relaxed);
                e.stats.bytes.fetch_add(m.len() as u64, Relaxed);
                self.run_actions(f, in_slot, m, &e.actions, reason, e.cookie, t);
            }
            Some(None) => self.run_actions(f, in_slot, m, &[Action::Normal], Reason::NoMatch, 0, t),
        }
        self.flows = Some(f);
    }
}
