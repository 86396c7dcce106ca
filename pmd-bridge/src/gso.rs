//! TCP/IPv4 segmentation in software with DPDK's own librte_gso, for an
//! mbuf whose TSO request its output cannot take (a tap port, a NIC
//! without TSO, a guest without GUEST_TSO4 on the rte_vhost path).
//!
//! librte_gso cuts without copying the payload: each segment is a header
//! mbuf (the frame's headers, copied) chained to indirect mbufs over the
//! frame's own payload. It writes each segment's IP length and id, TCP
//! sequence number and flags, but no checksum, so both are summed here
//! with rte_net's helpers. DPDK 22.11's librte_gso has no TCP/IPv6 (its
//! `gso_tcp6` came later): those frames stay with the caller's segmenter.
use std::ptr::NonNull;

use crate::mbuf::{tx_flags, TxOffload};
use crate::{ffi, Mbuf, Mempool};

/// The most segments one frame may become: 64 KB at the smallest MSS a
/// guest may ask for (536, RFC 879), with room to spare.
pub const MAX_SEGMENTS: usize = 128;

const ETH_HLEN: usize = 14;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;
const TCP_CWR: u8 = 0x80;
const IPV4_CSUM: usize = 10;

/// Why a frame was not cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoError {
    /// Its offload fields or headers are not a TCP/IPv4 segment librte_gso
    /// can cut (IPv6, a fragment, lengths that disagree with the headers,
    /// headers not in the first mbuf, too many segments).
    Malformed,
    /// The pool ran out of mbufs.
    NoMbuf,
}

/// Cuts `m` (its offloads TCP_SEG and IPV4, with l2/l3/l4 lengths and the
/// MSS in `tso_segsz`) into segments of at most `tso_segsz` bytes of
/// payload, each with its IPv4 header and TCP checksums filled in and no
/// offload flags left, handed to `emit` in order. The header and indirect
/// mbufs come from `pool`. `m` may be shared, an indirect clone or over
/// an external buffer (`own_head`); other holders see no change. Returns how
/// many segments were emitted (at least two: a payload that fits one
/// segment needs only its checksum, which is the caller's, and is refused
/// here as `Malformed`).
pub fn segment_tcp4(m: Mbuf, pool: &Mempool, mut emit: impl FnMut(Mbuf)) -> Result<usize, GsoError> {
    let t = m.tx_offload();
    let hdr = check(&m, &t)?;
    let segments = (m.len() - hdr).div_ceil(usize::from(t.tso_segsz));
    if !(2..=MAX_SEGMENTS).contains(&segments) {
        return Err(GsoError::Malformed);
    }
    let mss = usize::from(t.tso_segsz);
    let m = own_head(m, hdr, t, pool)?;
    let ctx = ffi::rte_gso_ctx {
        direct_pool: pool.as_ptr(),
        indirect_pool: pool.as_ptr(),
        flag: 0, // IP ids advance by one per segment, as a NIC's TSO does.
        gso_types: ffi::RTE_ETH_TX_OFFLOAD_TCP_TSO,
        gso_size: (hdr + mss) as u16,
    };
    let mut out = [std::ptr::null_mut::<ffi::rte_mbuf>(); MAX_SEGMENTS];
    let head = m.into_raw();
    // The head is direct and ours alone (its flags are ours to change);
    // the headers lie in it and match the lengths librte_gso reads (`check`).
    // SAFETY: a live chain as above; `out` holds the MAX_SEGMENTS it may fill.
    let n = unsafe { ffi::rte_gso_segment(head.as_ptr(), &ctx, out.as_mut_ptr(), MAX_SEGMENTS as u16) };
    // SAFETY: librte_gso never frees its input; the segments hold their own references.
    drop(unsafe { Mbuf::from_raw(head) });
    let n = match n {
        n if n > 0 => n as usize,
        n if n == -libc::ENOMEM => return Err(GsoError::NoMbuf),
        // 0: nothing it can cut, which `check` should have seen.
        _ => return Err(GsoError::Malformed),
    };
    // Adopted only now: on failure librte_gso frees what it made but
    // leaves the pointers in `out`.
    let mut segs: [Option<Mbuf>; MAX_SEGMENTS] = [const { None }; MAX_SEGMENTS];
    for (slot, &p) in segs.iter_mut().zip(&out[..n]) {
        // SAFETY: the first n entries are new chains librte_gso made for us alone.
        *slot = NonNull::new(p).map(|p| unsafe { drop_empty_segments(p) });
    }
    let (l3, l4) = (usize::from(t.l2_len), usize::from(t.l2_len) + usize::from(t.l3_len));
    // All summed before any is sent: a frame goes out whole or not at all.
    if !segs[..n].iter_mut().flatten().enumerate().all(|(k, s)| finish_checksums(s, l3, l4, k > 0)) {
        return Err(GsoError::Malformed);
    }
    segs[..n].iter_mut().filter_map(Option::take).for_each(&mut emit);
    Ok(n)
}

/// Unlinks and frees the empty segments behind `head`'s header and takes
/// the chain: librte_gso attaches an empty one to the first segment when
/// the frame's first mbuf holds its headers alone (a lent chain's private
/// header, `own_head`'s copy), and some NICs' transmit descriptors must
/// not be empty.
///
/// # Safety
/// `head` must be a chain whose every segment is the caller's alone, and
/// the caller hands it over.
unsafe fn drop_empty_segments(head: NonNull<ffi::rte_mbuf>) -> Mbuf {
    let h = head.as_ptr();
    let mut prev = h;
    // The chain's links and counts are ours to change; an unlinked
    // segment is freed as a chain of one.
    // SAFETY: the caller's chain, every segment ours alone (the contract).
    unsafe {
        let mut cur = (*h).next;
        while !cur.is_null() {
            let next = (*cur).next;
            if (*cur).data_len == 0 {
                (*prev).next = next;
                (*h).nb_segs -= 1;
                (*cur).next = std::ptr::null_mut();
                (*cur).nb_segs = 1;
                ffi::rte_pktmbuf_free_seg(cur);
            } else {
                prev = cur;
            }
            cur = next;
        }
        Mbuf::from_raw(head)
    }
}

/// `m` as librte_gso may take it: with a head we alone hold (it clears
/// TCP_SEG there, which a flood's other outputs must still see) that is a
/// direct mbuf (it copies the head's flags into every segment's header
/// mbuf, attachment bits too: copied from an indirect or external head,
/// they would have each header mbuf freed as attached to itself). Else a
/// fresh head holding a copy of the headers, chained to an indirect clone
/// of the rest of the frame.
fn own_head(m: Mbuf, hdr: usize, t: TxOffload, pool: &Mempool) -> Result<Mbuf, GsoError> {
    if m.is_exclusive() && m.head_is_direct() {
        return Ok(m);
    }
    let mut head = pool.alloc_from(&m.data()[..hdr]).ok_or(GsoError::NoMbuf)?;
    let mut rest = m.clone_indirect(pool).ok_or(GsoError::NoMbuf)?;
    if !rest.adj(hdr as u16) || !head.set_tx_offload(t) {
        return Err(GsoError::Malformed);
    }
    head.chain(rest).map_err(|_| GsoError::Malformed)?;
    Ok(head)
}

/// The length of `m`'s headers if they are what librte_gso expects of a
/// TCP/IPv4 frame: every length it reads agrees with the bytes, and all of
/// them lie in the first segment (it copies them from there alone).
fn check(m: &Mbuf, t: &TxOffload) -> Result<usize, GsoError> {
    let (l2, l3, l4) = (usize::from(t.l2_len), usize::from(t.l3_len), usize::from(t.l4_len));
    let wanted = tx_flags::TCP_SEG | tx_flags::IPV4;
    let hdr = l2 + l3 + l4;
    let bytes = m.data();
    let ok = t.flags & (wanted | tx_flags::IPV6) == wanted
        && t.tso_segsz > 0
        && l2 >= ETH_HLEN
        && hdr + usize::from(t.tso_segsz) <= usize::from(u16::MAX)
        && bytes.len() >= hdr;
    if !ok {
        return Err(GsoError::Malformed);
    }
    let (ip, tcp) = (&bytes[l2..l2 + l3], &bytes[l2 + l3..hdr]);
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    let ip_ok = l3 >= 20 && ip[0] == 0x40 | (l3 / 4) as u8 && l3 % 4 == 0 && ip[9] == IPPROTO_TCP && frag == 0;
    let tcp_ok = l4 >= 20 && usize::from(tcp[12] >> 4) * 4 == l4;
    if ip_ok && tcp_ok {
        Ok(hdr)
    } else {
        Err(GsoError::Malformed)
    }
}

/// Sums a segment's IPv4 header and TCP checksums (the TCP sum over the
/// header mbuf and the payload mbufs chained to it), clears CWR past the
/// first segment (RFC 3168 6.1.2: librte_gso repeats it) and drops the
/// offload flags the segment inherited.
fn finish_checksums(seg: &mut Mbuf, l3: usize, l4: usize, not_first: bool) -> bool {
    // The head is librte_gso's fresh copy of the headers, ours alone.
    let Some(head) = seg.data_mut().filter(|h| h.len() >= l4 + 20) else { return false };
    if not_first {
        head[l4 + TCP_FLAGS] &= !TCP_CWR;
    }
    head[l3 + IPV4_CSUM..][..2].fill(0);
    head[l4 + TCP_CSUM..][..2].fill(0);
    let ip = head[l3..].as_ptr().cast::<ffi::rte_ipv4_hdr>();
    // Both sums come out in network order, as the fields hold them.
    // SAFETY: `ip` is a whole IPv4 header in the head's data (l3 + 20 <= its length), only read.
    let ip_sum = unsafe { ffi::rte_ipv4_cksum(ip) };
    // SAFETY: as above; the chain is read from l4 on through its own segment lengths.
    let tcp_sum = unsafe { ffi::rte_ipv4_udptcp_cksum_mbuf(seg.as_ptr(), ip, l4 as u16) };
    let Some(head) = seg.data_mut() else { return false };
    head[l3 + IPV4_CSUM..][..2].copy_from_slice(&ip_sum.to_ne_bytes());
    head[l4 + TCP_CSUM..][..2].copy_from_slice(&tcp_sum.to_ne_bytes());
    seg.set_tx_offload(TxOffload::default())
}
