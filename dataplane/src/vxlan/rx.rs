//! What arrives on an underlay port for its tunnels: VXLAN packets to a
//! local address (decapsulated, and the remote and its link-layer address
//! learned) and ARP for a local address (answered, the asker learned).
//! Everything else on the underlay is bridged as on any port.
use std::cell::Cell;
use std::net::Ipv4Addr;

use pmd_bridge::{Burst, Mbuf};

use super::wire::{self, Arp, Malformed, Outer, ARP_REPLY, ARP_REQUEST};
use super::Underlay;
use crate::counters::{bump, DropReason};
use crate::egress::Egress;
use crate::parse::{is_multicast, ETH_HLEN};
use crate::port_io::TxPort;

/// What to do with one frame from the underlay.
#[derive(Clone, Copy)]
enum Verdict {
    Bridge,
    /// To tunnel `t` of the underlay.
    Decap(usize, Outer),
    Arp(Arp),
    Drop(DropReason),
}

fn judge(f: &[u8], u: &Underlay) -> Verdict {
    if let Some(a) = Arp::parse(f) {
        return if u.is_local(a.tpa) { Verdict::Arp(a) } else { Verdict::Bridge };
    }
    // Only what is addressed to a local address is ours to judge.
    let dst = f.get(ETH_HLEN + 16..ETH_HLEN + 20).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    if !dst.is_some_and(|ip| u.is_local(ip)) {
        return Verdict::Bridge;
    }
    match Outer::parse(f) {
        Ok(None) => Verdict::Bridge,
        Ok(Some(o)) => match u.tunnels.iter().position(|t| t.vtep.local_ip == o.dst_ip && t.vtep.vni == o.vni) {
            Some(t) => Verdict::Decap(t, o),
            None => Verdict::Drop(DropReason::VxlanUnknownVni),
        },
        Err(Malformed::Short) => Verdict::Drop(DropReason::VxlanShort),
        Err(Malformed::Flags) => Verdict::Drop(DropReason::VxlanFlags),
        Err(Malformed::Ip) => Verdict::Drop(DropReason::VxlanBadIp),
    }
}

impl Egress<'_> {
    /// Takes the underlay's frames for its tunnels out of `rx` (counted as
    /// the underlay's input): the decapsulated frames go on as each vxlan
    /// port's input, ARP answers go back out. What stays in `rx` is bridged.
    pub(crate) fn tunnels_in(&mut self, in_slot: u16, rx: &mut Burst, u: &Underlay) {
        let mut inner: Burst = Burst::new();
        let mut group = 0u16;
        let mut replies: Burst = Burst::new();
        let (mut taken, mut bytes) = (0u64, 0u64);
        let mut drops = [0u64; DropReason::COUNT];
        let verdict = Cell::new(Verdict::Bridge);
        let keep = |m: &Mbuf| {
            verdict.set(judge(m.data(), u));
            matches!(verdict.get(), Verdict::Bridge)
        };
        rx.retain(keep, |mut m| {
            taken += 1;
            bytes += m.len() as u64;
            match verdict.get() {
                Verdict::Bridge => unreachable!("kept"),
                Verdict::Drop(r) => drops[r as usize] += 1,
                Verdict::Arp(a) => {
                    for t in u.tunnels.iter().filter(|t| t.vtep.local_ip == a.tpa) {
                        if let Some(r) = t.vtep.remote_index(a.spa) {
                            t.vtep.learn_neighbour(r, a.sha);
                        }
                    }
                    if a.op == ARP_REQUEST && !is_multicast(&a.sha) {
                        let f = Arp::frame(ARP_REPLY, u.mac, a.tpa, a.sha, a.spa, a.sha);
                        if let Some(r) = self.pool.alloc_from(&f) {
                            let _ = replies.push(r);
                        }
                    }
                }
                Verdict::Decap(t, o) => {
                    let t = &u.tunnels[t];
                    let Some(r) = t.vtep.remote_index(o.src_ip) else {
                        drops[DropReason::VxlanUnknownRemote as usize] += 1;
                        return;
                    };
                    t.vtep.learn_neighbour(r, o.src_mac);
                    let extra = m.len() - o.inner_at - o.inner_len;
                    if !m.adj(o.inner_at as u16) || (extra > 0 && !m.trim(extra as u16)) {
                        drops[DropReason::VxlanShort as usize] += 1;
                        return;
                    }
                    let src = m.data().get(6..12).map(|b| b.try_into().expect("6 bytes"));
                    if let Some(src) = src.filter(|s| !is_multicast(s)) {
                        t.vtep.learn_mac(src, r);
                    }
                    // In order per port: a frame for another tunnel sends
                    // the frames gathered so far first.
                    if (group != t.slot && !inner.is_empty()) || inner.is_full() {
                        self.reborrow().forward_mbufs(group, &mut inner);
                    }
                    group = t.slot;
                    let _ = inner.push(m);
                }
            }
        });
        if !inner.is_empty() {
            self.reborrow().forward_mbufs(group, &mut inner);
        }
        let c = &self.counters.ports[in_slot as usize];
        if let (false, Some(TxPort::Eth(q))) = (replies.is_empty(), self.tx[in_slot as usize].as_mut()) {
            let n = replies.len() as u64;
            let sent = q.tx_burst(&mut replies) as u64;
            bump(&c.tx_packets, sent);
            bump(&c.tx_bytes, sent * wire::ARP_LEN as u64 + sent * ETH_HLEN as u64);
            bump(&c.drops[DropReason::TxFull as usize], n - sent);
        }
        bump(&c.rx_packets, taken);
        bump(&c.rx_bytes, bytes);
        for (c, n) in c.drops.iter().zip(drops) {
            bump(c, n);
        }
    }
}
