//! How a PMD thread receives from and sends to each kind of port.
//!
//! Each variant wraps the queue handle it owns; the loop sees one receive
//! call and one send call per burst whatever the port is. What a receive
//! returns says what it received: mbufs, or frames still in a copy-once
//! guest's buffers.
use std::sync::atomic::AtomicU64;

use pmd_bridge::eventfd::Waiter;
use pmd_bridge::{Burst, Mempool, RxQueue, TxQueue, VhostRxQueue, VhostTxQueue};

use crate::copy_once::{CopyOnceRx, CopyOnceTx, GuestBurst, GuestPkt};
use crate::counters::DropReason;
use crate::vxlan::tx::VxlanTx;

pub enum RxPort {
    Eth(RxQueue),
    /// Copies what the guest sends into mbufs from the pool.
    Vhost(VhostRxQueue),
    /// A copy-once port: the guest's transmit ring, walked by us.
    CopyOnce(Box<CopyOnceRx>),
}

pub enum TxPort {
    /// One attempt: what the NIC queue does not take is dropped by the caller.
    Eth(TxQueue),
    /// Copies into the guest's receive buffers, retrying up to `retries`
    /// times while the guest's ring is full (OVS retries 8 times).
    Vhost { q: VhostTxQueue, retries: u32 },
    /// A copy-once port: this thread's guest receive ring, walked by us.
    CopyOnce(Box<CopyOnceTx>),
    /// A vxlan port: encapsulates onto its underlay's queue, which the
    /// underlay's own entry owns (`vxlan::tx::with_underlay`).
    Vxlan(Box<VxlanTx>),
}

/// What one receive call brought.
pub enum Received<'a> {
    Nothing,
    /// This many mbufs, in the caller's burst.
    Mbufs(usize),
    /// Frames still in a copy-once guest's transmit buffers.
    Guest(GuestBurst<'a>),
}

impl RxPort {
    /// Receives into `mbufs`, or, from a copy-once port, into `guest`;
    /// chains a copy-once guest got back refused are counted in `drops`,
    /// and `ahead` runs as its burst is taken (`CopyOnceRx::recv`).
    #[inline]
    pub fn recv<'a>(&'a mut self, pool: &Mempool, mbufs: &mut Burst, guest: &'a mut [GuestPkt], drops: &[AtomicU64; DropReason::COUNT], ahead: impl FnOnce(usize, u64)) -> Received<'a> {
        let n = match self {
            RxPort::Eth(q) => q.rx_burst(mbufs),
            RxPort::Vhost(q) => q.dequeue_burst(pool, mbufs),
            RxPort::CopyOnce(r) => return r.recv(guest, drops, ahead).map_or(Received::Nothing, Received::Guest),
        };
        if n == 0 {
            Received::Nothing
        } else {
            Received::Mbufs(n)
        }
    }

    /// Delivers an interrupt a copy-once guest is still owed; whether one
    /// still is.
    pub fn retry_call(&mut self) -> bool {
        match self {
            RxPort::CopyOnce(r) => r.retry_call(),
            _ => false,
        }
    }

    /// Whether this queue can wake a sleeping thread, armed to (see
    /// `CopyOnceRx::sleep_on_kick`): only a copy-once guest's ring can.
    pub fn sleep_on_kick(&mut self, waiter: &mut Waiter) -> bool {
        match self {
            RxPort::CopyOnce(r) => r.sleep_on_kick(waiter),
            _ => false,
        }
    }

    /// Polled again after a sleep: no kicks.
    pub fn wake(&mut self) {
        if let RxPort::CopyOnce(r) = self {
            r.wake();
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
            TxPort::CopyOnce(r) => r.send(burst),
            // Sent with the underlay's queue, never alone.
            TxPort::Vxlan(_) => 0,
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

    #[inline]
    pub fn copy_once(&self) -> Option<&CopyOnceTx> {
        match self {
            TxPort::CopyOnce(r) => Some(r),
            _ => None,
        }
    }

    /// Housekeeping: delivers an interrupt a copy-once guest is still owed;
    /// frees what a NIC queue has sent (a guest's buffers among them: a
    /// quiet NIC must not hold a guest's transmit ring). Whether an
    /// interrupt is still owed.
    pub fn housekeep(&mut self) -> bool {
        match self {
            TxPort::CopyOnce(r) => r.retry_call(),
            TxPort::Eth(q) => {
                q.reclaim();
                false
            }
            TxPort::Vhost { .. } | TxPort::Vxlan(_) => false,
        }
    }
}
