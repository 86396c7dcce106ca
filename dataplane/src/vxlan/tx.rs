//! Encapsulation: a burst of frames for a vxlan port becomes VXLAN packets
//! on its underlay's transmit queue. Each packet is a private header mbuf
//! (the outer Ethernet, IPv4, UDP and VXLAN headers) chained in front of
//! the frame, which is neither copied nor changed: a frame flooded to
//! several remotes, or to other ports too, stays one shared payload.
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use pmd_bridge::cycles::tsc;
use pmd_bridge::mbuf::tx_flags;
use pmd_bridge::{Burst, Mbuf, Mempool, Stock, TxOffload, TxQueue};

use super::wire::{self, Arp, Encap, OUTER_L3_LEN, OUTER_LEN};
use super::Vtep;
use crate::counters::{bump, DropReason};
use crate::parse::{is_multicast, Mac, ETH_HLEN};
use crate::port_io::TxPort;

/// One PMD thread's sender for one vxlan port.
pub struct VxlanTx {
    vtep: Arc<Vtep>,
    /// The underlay's port slot, whose transmit queue this thread owns.
    pub underlay: u16,
    src_mac: Mac,
    /// The longest frame that fits the underlay's MTU once encapsulated.
    max_frame: usize,
    /// The underlay's NIC fills in IPv4 header checksums.
    ip_csum_offload: bool,
    /// Cycles between two ARP requests for one remote.
    ask_every: u64,
    out: Burst,
    /// The burst's header mbufs.
    stock: Stock,
}

/// One burst's drops by reason, published once.
#[derive(Default)]
struct Drops {
    mtu: u64,
    no_neighbour: u64,
    no_mbuf: u64,
    tx_full: u64,
}

impl VxlanTx {
    pub fn new(vtep: Arc<Vtep>, underlay: u16, src_mac: Mac, underlay_mtu: u16, ip_csum_offload: bool, hz: u64) -> VxlanTx {
        let max_frame = usize::from(underlay_mtu).saturating_sub(OUTER_L3_LEN);
        VxlanTx { vtep, underlay, src_mac, max_frame, ip_csum_offload, ask_every: hz / 4, out: Burst::new(), stock: Stock::default() }
    }

    /// Encapsulates every frame of `batch` toward the remote its
    /// destination was learned behind, or toward every remote, and sends
    /// on `q`, the underlay's queue. Takes the whole batch: what cannot go
    /// is dropped and counted in `drops` (a frame the underlay's MTU cannot
    /// carry once encapsulated is never fragmented). Returns how many
    /// frames left toward at least one remote.
    pub fn send(&mut self, batch: &mut Burst, q: &mut TxQueue, pool: &Mempool, drops: &[AtomicU64; DropReason::COUNT]) -> usize {
        let mut d = Drops::default();
        let mut sent = 0;
        for m in batch.drain() {
            if m.len() > self.max_frame {
                d.mtu += 1;
                continue;
            }
            let head = m.data();
            let Some(dst) = head.get(..6).map(|b| <Mac>::try_from(b).expect("6 bytes")) else {
                continue;
            };
            let sport = wire::source_port(head);
            let queued = match (!is_multicast(&dst)).then(|| self.vtep.remote_of(dst)).flatten() {
                Some(r) => self.encap(m, r, sport, q, pool, &mut d),
                None => {
                    // Head-end replication: a header per remote, one payload.
                    let Some(last) = self.vtep.remotes.len().checked_sub(1) else {
                        d.no_neighbour += 1;
                        continue;
                    };
                    let mut any = false;
                    for r in 0..last {
                        any |= self.encap(m.share(), r, sport, q, pool, &mut d);
                    }
                    self.encap(m, last, sport, q, pool, &mut d) | any
                }
            };
            sent += queued as usize;
        }
        self.flush(q, &mut d);
        self.stock.settle();
        let c = |r: DropReason| &drops[r as usize];
        bump(c(DropReason::UnderlayMtu), d.mtu);
        bump(c(DropReason::NoNeighbour), d.no_neighbour);
        bump(c(DropReason::NoMbuf), d.no_mbuf);
        bump(c(DropReason::TxFull), d.tx_full);
        sent
    }

    /// Queues frame `m` toward remote `r`; false if it was dropped.
    #[inline]
    fn encap(&mut self, m: Mbuf, r: usize, sport: u16, q: &mut TxQueue, pool: &Mempool, d: &mut Drops) -> bool {
        let Some(dst_mac) = self.vtep.neighbour(r) else {
            self.ask(r, pool);
            d.no_neighbour += 1;
            return false;
        };
        let Some(mut h) = self.stock.take(pool) else {
            d.no_mbuf += 1;
            return false;
        };
        let e = Encap { src_mac: self.src_mac, dst_mac, src_ip: self.vtep.local_ip, dst_ip: self.vtep.remotes[r], vni: self.vtep.vni };
        // Written in place: a fresh mbuf takes 50 bytes.
        let Some(hdr) = h.fill_to(&[], OUTER_LEN).and_then(|b| <&mut [u8; OUTER_LEN]>::try_from(b).ok()) else {
            d.no_mbuf += 1;
            return false;
        };
        e.write(hdr, m.len(), sport, self.ip_csum_offload);
        if self.ip_csum_offload {
            let o = TxOffload { flags: tx_flags::IPV4 | tx_flags::IP_CKSUM, l2_len: ETH_HLEN as u8, l3_len: wire::IPV4_HLEN as u16, ..TxOffload::default() };
            h.set_tx_offload(o);
        }
        if h.chain(m).is_err() {
            d.no_mbuf += 1; // more segments than an mbuf chain may have
            return false;
        }
        self.push(h, q, d);
        true
    }

    /// An ARP request for remote `r`, unless one went out lately.
    fn ask(&mut self, r: usize, pool: &Mempool) {
        if !self.vtep.should_ask(r, tsc(), self.ask_every) {
            return;
        }
        let f = Arp::frame(wire::ARP_REQUEST, self.src_mac, self.vtep.local_ip, [0; 6], self.vtep.remotes[r], [0xff; 6]);
        if let Some(m) = pool.alloc_from(&f) {
            // Sent with this burst's packets; a full burst is sent first.
            let _ = self.out.push(m);
        }
    }

    #[inline]
    fn push(&mut self, h: Mbuf, q: &mut TxQueue, d: &mut Drops) {
        if self.out.is_full() {
            self.flush(q, d);
        }
        let _ = self.out.push(h);
    }

    fn flush(&mut self, q: &mut TxQueue, d: &mut Drops) {
        q.tx_burst(&mut self.out);
        d.tx_full += self.out.len() as u64;
        self.out.clear();
    }
}

/// A vxlan port's sender and its underlay's queue, taken together from a
/// plan's senders (by slot); None if `out` is not a vxlan port or its
/// underlay has no queue.
#[inline]
pub fn with_underlay(tx: &mut [Option<TxPort>], out: usize) -> Option<(&mut VxlanTx, &mut TxQueue)> {
    let Some(Some(TxPort::Vxlan(v))) = tx.get(out) else { return None };
    let u = usize::from(v.underlay);
    match tx.get_disjoint_mut([out, u]).ok()? {
        [Some(TxPort::Vxlan(v)), Some(TxPort::Eth(q))] => Some((v, q)),
        _ => None,
    }
}
