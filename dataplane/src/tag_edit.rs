//! VLAN tag push and pop on mbufs, without ever writing a shared mbuf.
//!
//! A packet going to one output is ours alone: its tag is edited in place
//! (the MAC addresses move by 4 bytes within the headroom). A flooded packet
//! is shared by every output, so an output that needs another tag gets a
//! private header mbuf (new MACs and tag) chained in front of an indirect
//! clone that starts after the old L2 header: no byte of the shared packet
//! changes, and its payload is not copied.
use pmd_bridge::{Mbuf, Mempool, TxOffload};

use crate::counters::DropReason;
use crate::parse::{ETHERTYPE_VLAN, ETH_HLEN, VLAN_HLEN};
use crate::vlan::TagEdit;

const MACS: usize = 12;

/// Applies `edit` to `m`; on failure the packet is gone and the reason says why.
#[inline]
pub fn apply(m: Mbuf, edit: TagEdit, pool: &Mempool) -> Result<Mbuf, DropReason> {
    let off = m.tx_offload();
    let (mut m, delta) = match edit {
        TagEdit::Keep => return Ok(m),
        TagEdit::Push(vid) => (push(m, vid, pool)?, VLAN_HLEN as i16),
        TagEdit::Pop => (pop(m, pool)?, -(VLAN_HLEN as i16)),
    };
    // Offload requests name header lengths: the L2 one just changed.
    if off.flags != 0 {
        let l2_len = u8::try_from(off.l2_len as i16 + delta).map_err(|_| DropReason::Malformed)?;
        if !m.set_tx_offload(TxOffload { l2_len, ..off }) {
            return Err(DropReason::Malformed);
        }
    }
    Ok(m)
}

fn tag(vid: u16) -> [u8; VLAN_HLEN] {
    let [a, b] = ETHERTYPE_VLAN.to_be_bytes();
    let [c, d] = vid.to_be_bytes();
    [a, b, c, d]
}

fn push(mut m: Mbuf, vid: u16, pool: &Mempool) -> Result<Mbuf, DropReason> {
    if m.data().len() < MACS {
        return Err(DropReason::Runt);
    }
    if m.prepend(VLAN_HLEN as u16).is_some() {
        let d = m.data_mut().expect("exclusive");
        d.copy_within(VLAN_HLEN..VLAN_HLEN + MACS, 0);
        d[MACS..MACS + VLAN_HLEN].copy_from_slice(&tag(vid));
        return Ok(m);
    }
    let mut hdr = pool.alloc().ok_or(DropReason::NoMbuf)?;
    let mut macs = [0u8; MACS + VLAN_HLEN];
    macs[..MACS].copy_from_slice(&m.data()[..MACS]);
    macs[MACS..].copy_from_slice(&tag(vid));
    hdr.fill(&macs).ok_or(DropReason::NoMbuf)?;
    let mut rest = m.clone_indirect(pool).ok_or(DropReason::NoMbuf)?;
    rest.adj(MACS as u16);
    hdr.chain(rest).map_err(|_| DropReason::NoMbuf)?;
    Ok(hdr)
}

fn pop(mut m: Mbuf, pool: &Mempool) -> Result<Mbuf, DropReason> {
    if m.data().len() < ETH_HLEN + VLAN_HLEN {
        return Err(DropReason::Runt);
    }
    if let Some(d) = m.data_mut() {
        d.copy_within(0..MACS, VLAN_HLEN);
        m.adj(VLAN_HLEN as u16);
        return Ok(m);
    }
    let mut hdr = pool.alloc().ok_or(DropReason::NoMbuf)?;
    let macs: [u8; MACS] = m.data()[..MACS].try_into().expect("length checked");
    hdr.fill(&macs).ok_or(DropReason::NoMbuf)?;
    let mut rest = m.clone_indirect(pool).ok_or(DropReason::NoMbuf)?;
    rest.adj((MACS + VLAN_HLEN) as u16);
    hdr.chain(rest).map_err(|_| DropReason::NoMbuf)?;
    Ok(hdr)
}
