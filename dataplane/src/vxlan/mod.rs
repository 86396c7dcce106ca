//! VXLAN tunnel endpoints (RFC 7348): a vxlan port is a bridge port whose
//! frames travel in UDP/IPv4 over another port, its underlay.
//!
//! `wire`: the headers. `Vtep`: one endpoint's state, shared by the PMD
//! threads without locks. `rx`: what arrives on an underlay (VXLAN to
//! decapsulate, ARP for a local address). `tx`: encapsulation toward the
//! remotes, in a private header mbuf chained in front of the frame.
//!
//! The remotes are a static list (head-end replication): they are where
//! a frame for an unknown or multicast MAC goes, each a copy of the
//! header over one shared payload, and the only endpoints whose packets
//! are taken. Each is reached on the underlay's own link, its MAC learned
//! from ARP (asked by the switch) and from its VXLAN packets.
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::parse::Mac;

pub mod rx;
pub mod tx;
pub mod wire;

/// Inner MACs whose remote an endpoint remembers (direct-mapped: a MAC
/// whose entry another took is sent to every remote until it is heard
/// again, which is correct, only costlier).
const MAC_ENTRIES: usize = 4096;
const VALID: u64 = 1 << 63;
const MAC_BITS: u32 = 48;

/// Most remotes of one endpoint: an index fits the MAC table's entry.
pub const MAX_REMOTES: usize = 1024;

fn mac_word(mac: Mac) -> u64 {
    let [a, b, c, d, e, f] = mac;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

fn word_mac(w: u64) -> Mac {
    let [_, _, a, b, c, d, e, f] = w.to_be_bytes();
    [a, b, c, d, e, f]
}

/// One tunnel endpoint: its VNI, addresses, and what it has learned.
pub struct Vtep {
    pub vni: u32,
    pub local_ip: Ipv4Addr,
    pub remotes: Vec<Ipv4Addr>,
    /// Per remote: its MAC on the underlay's link, `VALID` when known.
    neighbours: Box<[AtomicU64]>,
    /// Per remote: when (TSC) the switch last asked for it by ARP.
    asked: Box<[AtomicU64]>,
    /// Inner source MAC → the remote it was heard from: `VALID`, the
    /// remote's index above the MAC.
    macs: Box<[AtomicU64]>,
    /// Keys the MAC table's hash, so no remote picks its collisions.
    seed: u64,
}

impl Vtep {
    pub fn new(vni: u32, local_ip: Ipv4Addr, remotes: Vec<Ipv4Addr>) -> Vtep {
        assert!(remotes.len() <= MAX_REMOTES, "at most {MAX_REMOTES} remotes");
        let atomics = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8) | 1;
        Vtep { vni, local_ip, neighbours: atomics(remotes.len()), asked: atomics(remotes.len()), macs: atomics(MAC_ENTRIES), remotes, seed }
    }

    /// The index of a remote in the list.
    #[inline]
    pub fn remote_index(&self, ip: Ipv4Addr) -> Option<usize> {
        self.remotes.iter().position(|&r| r == ip)
    }

    /// Remote `i`'s MAC on the underlay's link, once learned.
    #[inline]
    pub fn neighbour(&self, i: usize) -> Option<Mac> {
        let w = self.neighbours[i].load(Relaxed);
        (w & VALID != 0).then(|| word_mac(w))
    }

    /// Stores only a change: the line stays shared while nothing moves.
    #[inline]
    pub fn learn_neighbour(&self, i: usize, mac: Mac) {
        let w = VALID | mac_word(mac);
        if self.neighbours[i].load(Relaxed) != w {
            self.neighbours[i].store(w, Relaxed);
        }
    }

    /// Whether to ask for remote `i` by ARP now: not within `every`
    /// cycles of the last time (any thread's).
    #[inline]
    pub fn should_ask(&self, i: usize, now: u64, every: u64) -> bool {
        let last = self.asked[i].load(Relaxed);
        (last == 0 || now.wrapping_sub(last) >= every) && self.asked[i].compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    }

    #[inline]
    fn entry(&self, mac: Mac) -> &AtomicU64 {
        let h = (mac_word(mac) ^ self.seed).wrapping_mul(self.seed | 0x9e37_79b9_7f4a_7c15 | 1);
        &self.macs[(h >> 52) as usize % MAC_ENTRIES]
    }

    /// Remembers that inner MAC `mac` is behind remote `i`.
    #[inline]
    pub fn learn_mac(&self, mac: Mac, i: usize) {
        let w = VALID | (i as u64) << MAC_BITS | mac_word(mac);
        let e = self.entry(mac);
        if e.load(Relaxed) != w {
            e.store(w, Relaxed);
        }
    }

    /// The remote behind inner MAC `mac`, if heard from and remembered.
    #[inline]
    pub fn remote_of(&self, mac: Mac) -> Option<usize> {
        let w = self.entry(mac).load(Relaxed);
        let i = ((w & !VALID) >> MAC_BITS) as usize;
        (w & VALID != 0 && w & ((1 << MAC_BITS) - 1) == mac_word(mac) && i < self.remotes.len()).then_some(i)
    }
}

/// The tunnels one underlay port carries, in its `PortView`.
#[derive(Default)]
pub struct Underlay {
    /// The underlay's own MAC: the source of what it sends, and what it
    /// answers ARP for its tunnels' addresses with.
    pub mac: Mac,
    pub tunnels: Vec<Tunnel>,
}

pub struct Tunnel {
    /// The vxlan port's slot.
    pub slot: u16,
    pub vtep: Arc<Vtep>,
}

impl std::fmt::Debug for Underlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t: Vec<_> = self.tunnels.iter().map(|t| (t.slot, t.vtep.vni, t.vtep.local_ip)).collect();
        f.debug_struct("Underlay").field("mac", &self.mac).field("tunnels", &t).finish()
    }
}

impl Underlay {
    /// Whether `ip` is one of its tunnels' local addresses.
    #[inline]
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.tunnels.iter().any(|t| t.vtep.local_ip == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vtep() -> Vtep {
        Vtep::new(42, "10.0.0.1".parse().unwrap(), vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()])
    }

    #[test]
    fn macs_are_learned_per_remote_and_move() {
        let v = vtep();
        let a = [2, 0, 0, 0, 0, 0xa];
        assert_eq!(v.remote_of(a), None);
        v.learn_mac(a, 1);
        assert_eq!(v.remote_of(a), Some(1));
        v.learn_mac(a, 0);
        assert_eq!(v.remote_of(a), Some(0), "a station that moved");
        assert_eq!(v.remote_of([2, 0, 0, 0, 0, 0xb]), None);
        // Many stations: each one remembered is remembered right.
        for i in 0..10_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            v.learn_mac([2, 0, 1, b, c, d], (i % 2) as usize);
        }
        for i in 0..10_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            if let Some(r) = v.remote_of([2, 0, 1, b, c, d]) {
                assert_eq!(r, (i % 2) as usize);
            }
        }
    }

    #[test]
    fn neighbours_and_asking() {
        let v = vtep();
        assert_eq!(v.remote_index("10.0.0.3".parse().unwrap()), Some(1));
        assert_eq!(v.remote_index("10.0.0.9".parse().unwrap()), None);
        assert_eq!(v.neighbour(0), None);
        v.learn_neighbour(0, [2, 1, 1, 1, 1, 1]);
        assert_eq!(v.neighbour(0), Some([2, 1, 1, 1, 1, 1]));
        assert!(v.should_ask(1, 1000, 500));
        assert!(!v.should_ask(1, 1200, 500), "asked 200 cycles ago");
        assert!(v.should_ask(1, 1600, 500));
    }
}
