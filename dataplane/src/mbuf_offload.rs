//! Offloads on the mbuf path: a frame's validated `Offload` as DPDK's
//! transmit flags (what NICs and rte_vhost's enqueue read) and back, and
//! the software fallback for an output that cannot take a frame's
//! offloads: its checksum finished, or its TCP segment cut into frames.
//!
//! rte_vhost's dequeue (legacy flags) has already checked a guest's header
//! against the frame; the flags of an mbuf are otherwise only ever ours.
use pmd_bridge::{segment_tcp4, tx_flags, GsoError, Mbuf, Mempool, TxOffload};

use crate::counters::DropReason;
use crate::offload::{complete_partial, Caps, Checksum, Csum, Gso, GsoKind, Offload, Segmenter, MIN_MSS, TCP_CSUM_OFFSET};
use crate::parse::EthHeader;

const UDP_CSUM_OFFSET: u16 = 6;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TCP_CWR: u8 = 0x80;

/// The transmit flags for a frame whose first bytes are `head`.
pub fn to_mbuf(off: &Offload, head: &[u8]) -> TxOffload {
    let Some(csum) = off.csum else { return TxOffload::default() };
    let l2 = EthHeader::parse(head).map(|h| h.header_len()).unwrap_or(14);
    let v6 = l3_is_v6(head, l2);
    let mut t = TxOffload {
        flags: if v6 { tx_flags::IPV6 } else { tx_flags::IPV4 },
        l2_len: l2 as u8,
        l3_len: (csum.start as usize).saturating_sub(l2) as u16,
        ..TxOffload::default()
    };
    t.flags |= if csum.offset == UDP_CSUM_OFFSET { tx_flags::UDP_CKSUM } else { tx_flags::TCP_CKSUM };
    if let Some(g) = off.gso {
        t.flags |= tx_flags::TCP_SEG;
        // A NIC cutting IPv4 segments must fill each one's header checksum.
        if g.kind == GsoKind::Tcp4 {
            t.flags |= tx_flags::IP_CKSUM;
        }
        t.l2_len = g.l2_len;
        t.l3_len = g.l3_len as u16;
        t.l4_len = g.l4_len;
        t.tso_segsz = g.mss;
    }
    t
}

/// What an mbuf's transmit flags ask for, as an `Offload`.
pub fn of_mbuf(m: &Mbuf) -> Offload {
    let t = m.tx_offload();
    let offset = match t.flags & tx_flags::L4_MASK {
        tx_flags::TCP_CKSUM => TCP_CSUM_OFFSET,
        tx_flags::UDP_CKSUM => UDP_CSUM_OFFSET,
        _ => return Offload::NONE,
    };
    let csum = Csum { start: t.l2_len as u16 + t.l3_len, offset };
    let gso = (t.flags & tx_flags::TCP_SEG != 0 && offset == TCP_CSUM_OFFSET).then(|| {
        let cwr = m.data().get(t.l2_len as usize + t.l3_len as usize + 13).is_some_and(|f| f & TCP_CWR != 0);
        Gso {
            kind: if t.flags & tx_flags::IPV6 != 0 { GsoKind::Tcp6 } else { GsoKind::Tcp4 },
            ecn: cwr,
            mss: t.tso_segsz,
            l2_len: t.l2_len,
            l3_len: t.l3_len.min(255) as u8,
            l4_len: t.l4_len,
        }
    });
    Offload { csum: Some(csum), gso }
}

fn l3_is_v6(head: &[u8], l2: usize) -> bool {
    let at = if l2 == 18 { 16 } else { 12 };
    head.get(at..at + 2) == Some(&ETHERTYPE_IPV6.to_be_bytes()[..])
}

/// Makes `m` fit an output that takes `caps`: as it is, or with its
/// checksum finished, or cut into TCP segments with full checksums, each
/// handed to `emit`. TCP/IPv4 segments are cut by DPDK's librte_gso over
/// the frame's own payload (`pmd_bridge::segment_tcp4`); the rest (TCP/IPv6,
/// which 22.11's librte_gso lacks, chains lent over guest memory, and
/// checksums alone) is done through
/// `scratch`, the caller's (kept between calls: up to a 64 KB frame), with
/// one more copy of the payload.
pub fn fit(m: Mbuf, caps: Caps, pool: &Mempool, scratch: &mut Vec<u8>, mut emit: impl FnMut(Mbuf)) -> Result<(), DropReason> {
    let off = of_mbuf(&m);
    if off.fits(caps) {
        emit(m);
        return Ok(());
    }
    // Not over guest memory: a real guest's 64 MB sent to a tap port that
    // way arrived corrupted (vswitch/tests/zero_copy_nic.rs), for a reason
    // not yet found; a lent chain is copied once more instead.
    let gso = off.gso.filter(|g| g.kind == GsoKind::Tcp4 && m.len() > g.hdr_len() + usize::from(g.mss) && !m.has_external_segment());
    if let Some(gso) = gso {
        // rte_vhost checked little more than a non-zero MSS.
        if gso.mss < MIN_MSS {
            return Err(DropReason::Malformed);
        }
        return match segment_tcp4(m, pool, emit) {
            Ok(_) => Ok(()),
            Err(GsoError::NoMbuf) => Err(DropReason::NoMbuf),
            Err(GsoError::Malformed) => Err(DropReason::Malformed),
        };
    }
    scratch.clear();
    m.segments().for_each(|s| scratch.extend_from_slice(s));
    drop(m);
    let Some(csum) = off.csum else {
        return Err(DropReason::Malformed);
    };
    let Some(gso) = off.gso else {
        if !complete_partial(scratch, csum, &Checksum::new()) {
            return Err(DropReason::Malformed);
        }
        emit(pool.alloc_from(scratch).ok_or(DropReason::NoMbuf)?);
        return Ok(());
    };
    // rte_vhost checked little more than a non-zero MSS.
    if gso.mss < MIN_MSS || scratch.len() < gso.hdr_len() {
        return Err(DropReason::Malformed);
    }
    let seg = Segmenter::try_new(&gso, &scratch[..gso.hdr_len()], scratch.len()).ok_or(DropReason::Malformed)?;
    let mut frame = [0u8; 9216 + 256];
    for k in 0..seg.count() {
        let hl = gso.hdr_len();
        let range = seg.segment(k, &mut frame[..hl], true);
        let payload = scratch.get(range.clone()).ok_or(DropReason::Malformed)?;
        let end = hl + payload.len();
        let body = frame.get_mut(hl..end).ok_or(DropReason::Malformed)?;
        body.copy_from_slice(payload);
        if !complete_partial(&mut frame[..end], gso.csum(), &Checksum::new()) {
            return Err(DropReason::Malformed);
        }
        emit(pool.alloc_from(&frame[..end]).ok_or(DropReason::NoMbuf)?);
    }
    Ok(())
}
