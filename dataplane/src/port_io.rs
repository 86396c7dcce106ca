//! How a PMD thread receives from and sends to each kind of port.
//!
//! Each variant wraps the pmd-bridge queue handle it owns; the loop sees
//! one receive call and one send call per burst whatever the port is. A new
//! datapath (the copy-once vhost path) adds its variants here.
use pmd_bridge::{Burst, Mempool, RxQueue, TxQueue, VhostRxQueue, VhostTxQueue};

use crate::own_ring::OwnRing;

pub enum RxPort {
    Eth(RxQueue),
    /// Copies what the guest sends into mbufs from the pool.
    Vhost(VhostRxQueue),
    /// A copy-once port: the guest's transmit ring, walked by us.
    Own(Box<OwnRing>),
}

pub enum TxPort {
    /// One attempt: what the NIC queue does not take is dropped by the caller.
    Eth(TxQueue),
    /// Copies into the guest's receive buffers, retrying up to `retries`
    /// times while the guest's ring is full (OVS retries 8 times).
    Vhost { q: VhostTxQueue, retries: u32 },
    /// A copy-once port: this thread's guest receive ring, walked by us.
    Own(Box<OwnRing>),
}

impl RxPort {
    /// Receives into `burst` from a port that delivers mbufs (a copy-once
    /// port's frames stay in the guest: `OwnRing::recv_guest`).
    #[inline]
    pub fn recv(&mut self, pool: &Mempool, burst: &mut Burst) -> usize {
        match self {
            RxPort::Eth(q) => q.rx_burst(burst),
            RxPort::Vhost(q) => q.dequeue_burst(pool, burst),
            RxPort::Own(_) => 0,
        }
    }
}

impl TxPort {
    /// Sends what the port takes from the front of `burst`; the rest stays.
    /// Returns how many were sent.
    #[inline]
    pub fn send(&mut self, burst: &mut Burst) -> usize {
        match self {
            TxPort::Eth(q) => q.tx_burst(burst),
            TxPort::Own(r) => r.send(burst),
            TxPort::Vhost { q, retries } => {
                let mut sent = q.enqueue_burst(burst);
                let mut tries = 0;
                while !burst.is_empty() && tries < *retries {
                    sent += q.enqueue_burst(burst);
                    tries += 1;
                }
                sent
            }
        }
    }
}
