//! Owned packet buffers.
//!
//! An `Mbuf` owns one reference to an mbuf chain and frees it when dropped.
//! `share` takes another reference to the same chain (flooding without a
//! copy); while a chain is shared, nothing can change it through any handle:
//! every mutating method checks that this handle is the only one.
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::ffi;

/// One owned reference to an mbuf chain. Same layout as `*mut rte_mbuf`, so a
/// slice of them is what `rte_eth_tx_burst` takes.
#[repr(transparent)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

// SAFETY: an Mbuf is one owned reference; moving it to another thread moves
// that ownership (reference counts are atomic in DPDK's default build).
unsafe impl Send for Mbuf {}

const IND_ATTACHED: u64 = ffi::RTE_MBUF_F_INDIRECT;
const EXT_ATTACHED: u64 = ffi::RTE_MBUF_F_EXTERNAL;

impl Mbuf {
    /// Takes ownership of one reference to `m`.
    #[inline]
    /// # Safety
    /// `m` must be a valid mbuf chain whose reference the caller owns and
    /// hands over; no one may use that reference afterwards.
    pub unsafe fn from_raw(m: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// Gives up ownership without freeing.
    #[inline]
    pub fn into_raw(self) -> NonNull<ffi::rte_mbuf> {
        let m = self.0;
        std::mem::forget(self);
        m
    }

    /// For a C helper that reads the chain.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const ffi::rte_mbuf {
        self.0.as_ptr()
    }

    #[inline]
    fn raw(&self) -> &ffi::rte_mbuf {
        // SAFETY: we own a reference, so the mbuf is alive; the fields read
        // through this are changed only by a sole owner (checked on mutation).
        unsafe { self.0.as_ref() }
    }

    fn segs(&self) -> impl Iterator<Item = &ffi::rte_mbuf> {
        let mut next = Some(self.raw());
        std::iter::from_fn(move || {
            let cur = next?;
            // SAFETY: `next` links segments of the same live chain, or is null.
            next = unsafe { cur.next.as_ref() };
            Some(cur)
        })
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw().pkt_len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of segments in the chain.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The first segment's data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        seg_data(self.raw())
    }

    /// Each segment's data, in order.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.segs().map(seg_data)
    }

    /// The whole packet, copied into one Vec (tests and control paths).
    pub fn to_vec(&self) -> Vec<u8> {
        self.segments().flatten().copied().collect()
    }

    /// The input port DPDK recorded on receive.
    #[inline]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// References to the first segment (several handles after `share`).
    #[inline]
    pub fn refcnt(&self) -> u16 {
        refcnt(self.raw()).load(Ordering::Relaxed)
    }

    /// Fills a fresh single-segment mbuf with `bytes` and returns its data,
    /// writable: the generator's per-packet path, done with field writes
    /// rather than a C call per packet. None if the mbuf already holds data,
    /// is shared, or is too small.
    #[inline]
    pub fn fill(&mut self, bytes: &[u8]) -> Option<&mut [u8]> {
        self.fill_to(bytes, bytes.len())
    }

    /// `fill` with room for `len` bytes, `bytes` the first of them: the
    /// rest is left as the buffer held it (an earlier packet's bytes), for
    /// the caller to overwrite before the mbuf goes anywhere (a frame copied
    /// straight from where it lies, headers from elsewhere).
    #[inline]
    pub fn fill_to(&mut self, bytes: &[u8], len: usize) -> Option<&mut [u8]> {
        if len < bytes.len() {
            return None;
        }
        let m = self.0.as_ptr();
        // The slice returned is the mbuf's own data room: initialised memory
        // (the pool's, zeroed at creation and only written since).
        // SAFETY: we own the mbuf; read, and written only when exclusive, empty and unchained.
        unsafe {
            if refcnt(&*m).load(Ordering::Relaxed) != 1
                || (*m).data_len != 0
                || !(*m).next.is_null()
                || (*m).ol_flags & (IND_ATTACHED | EXT_ATTACHED) != 0
                || ((*m).buf_len as usize - (*m).data_off as usize) < len
            {
                return None;
            }
            let dst = ((*m).buf_addr as *mut u8).add((*m).data_off as usize);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            (*m).data_len = len as u16;
            (*m).pkt_len = len as u32;
            Some(std::slice::from_raw_parts_mut(dst, len))
        }
    }

    /// Whether this handle is the only reference to every segment's header,
    /// so their metadata (offsets, lengths, links) may change.
    #[inline]
    pub fn is_exclusive(&self) -> bool {
        // Acquire: another handle's last reads, released by its decrement,
        // happen before whatever we write once we see the count at 1.
        self.segs().all(|s| refcnt(s).load(Ordering::Acquire) == 1)
    }

    /// Whether, in addition, no other mbuf points at the data buffers (an
    /// indirect clone or an external buffer shared elsewhere), so the bytes
    /// may be written. Never for a segment over guest memory (`extbuf`).
    #[inline]
    pub fn is_data_exclusive(&self) -> bool {
        self.is_exclusive() && self.segs().all(data_exclusive)
    }

    /// `is_data_exclusive` for the first segment's bytes alone (what
    /// `data_mut` and `prepend` write), the whole chain's metadata
    /// exclusive: a private header in front of a payload that is not.
    #[inline]
    pub fn is_head_data_exclusive(&self) -> bool {
        self.is_exclusive() && data_exclusive(self.raw())
    }

    /// Whether the first segment holds its own buffer (neither an indirect
    /// clone nor attached to an external buffer).
    #[inline]
    pub fn head_is_direct(&self) -> bool {
        self.raw().ol_flags & (IND_ATTACHED | EXT_ATTACHED) == 0
    }

    /// Whether any segment is attached to an external buffer (e.g. guest
    /// memory lent by `extbuf`).
    #[inline]
    pub fn has_external_segment(&self) -> bool {
        self.segs().any(|s| s.ol_flags & EXT_ATTACHED != 0)
    }

    /// Another reference to the same chain (reference count + 1 on every
    /// segment). Neither handle can change the chain while both exist.
    #[inline]
    pub fn share(&self) -> Mbuf {
        // The same atomic increment as rte_pktmbuf_refcnt_update, on every
        // segment, without a C call per packet.
        for s in self.segs() {
            // A 16-bit count that wrapped would free a buffer still in use:
            // stop the process rather than corrupt memory.
            if refcnt(s).fetch_add(1, Ordering::AcqRel) >= u16::MAX - 1 {
                std::process::abort();
            }
        }
        Mbuf(self.0)
    }

    /// The first segment's data, writable, if nothing else shares it.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_head_data_exclusive() {
            return None;
        }
        let m = self.raw();
        // SAFETY: the data is ours alone (checked above) and lies within the
        // segment's buffer at buf_addr + data_off for data_len bytes.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        })
    }

    /// Extends the data at the front by `n` bytes of headroom and returns
    /// them; None if shared or if the headroom is too small.
    pub fn prepend(&mut self, n: u16) -> Option<&mut [u8]> {
        if !self.is_head_data_exclusive() {
            return None;
        }
        let m = self.0.as_ptr();
        // SAFETY: exclusive (checked), so these field updates are ours alone
        // (rte_pktmbuf_prepend's, in Rust); the new bytes lie in the headroom.
        unsafe {
            if (*m).data_off < n {
                return None;
            }
            (*m).data_off -= n;
            (*m).data_len += n;
            (*m).pkt_len += n as u32;
            Some(std::slice::from_raw_parts_mut(((*m).buf_addr as *mut u8).add((*m).data_off as usize), n as usize))
        }
    }

    /// Drops `n` bytes from the front of the packet (first segment only).
    pub fn adj(&mut self, n: u16) -> bool {
        if !self.is_exclusive() {
            return false;
        }
        let m = self.0.as_ptr();
        // SAFETY: exclusive metadata (checked); rte_pktmbuf_adj's field
        // updates, in Rust, after its length check.
        unsafe {
            if n > (*m).data_len {
                return false;
            }
            (*m).data_off += n;
            (*m).data_len -= n;
            (*m).pkt_len -= n as u32;
        }
        true
    }

    /// Drops `n` bytes from the end of the packet (last segment only).
    pub fn trim(&mut self, n: u16) -> bool {
        // SAFETY: exclusive metadata (checked); rte_pktmbuf_trim checks length.
        self.is_exclusive() && unsafe { ffi::rte_pktmbuf_trim(self.0.as_ptr(), n) } == 0
    }

    /// Appends `bytes` to the last segment; None if shared or no tailroom.
    pub fn append(&mut self, bytes: &[u8]) -> Option<()> {
        if !self.is_data_exclusive() {
            return None;
        }
        let n = u16::try_from(bytes.len()).ok()?;
        // SAFETY: exclusive (checked); rte_pktmbuf_append checks tailroom.
        let p = unsafe { ffi::rte_pktmbuf_append(self.0.as_ptr(), n) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at `n` bytes of tailroom we now own.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>(), bytes.len()) };
        Some(())
    }

    /// Appends `tail` as the next segments of this chain. This chain must be
    /// exclusive; `tail` may be shared (only this chain's last link changes),
    /// which is how a private header goes in front of a flooded packet.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        if !self.is_exclusive() {
            return Err(tail);
        }
        // Not rte_pktmbuf_chain: it rewrites the tail's pkt_len, which other
        // handles of a shared tail read. Only our own segments change here.
        let segs = self.nb_segs() as u32 + tail.nb_segs() as u32;
        if segs > ffi::RTE_MBUF_MAX_NB_SEGS {
            return Err(tail);
        }
        let head = self.0.as_ptr();
        // SAFETY: self's segments are ours alone (checked), so writing the
        // last one's `next` and the head's counters races with no one; the
        // tail is only read.
        unsafe {
            let mut last = head;
            while !(*last).next.is_null() {
                last = (*last).next;
            }
            (*last).next = tail.0.as_ptr();
            (*head).nb_segs = segs as u16;
            (*head).pkt_len += tail.raw().pkt_len;
        }
        std::mem::forget(tail);
        Ok(())
    }

    /// An indirect clone from `pool`: new headers (free to adjust) over the
    /// same data, which then counts as shared for both.
    pub fn clone_indirect(&self, pool: &crate::Mempool) -> Option<Mbuf> {
        // SAFETY: self is alive; rte_pktmbuf_clone attaches new headers to
        // each segment's buffer, taking a data reference for each.
        let m = unsafe { ffi::rte_pktmbuf_clone(self.0.as_ptr(), pool.as_ptr()) };
        // SAFETY: a non-null clone is a new chain we own.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }
}

/// What a packet asks of its output beyond carrying its bytes: DPDK's
/// transmit offload flags and the header lengths they need (the checksum
/// and TSO requests a guest's virtio-net header made, in the form NICs and
/// rte_vhost's enqueue read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOffload {
    /// Only the `tx_flags` bits below.
    pub flags: u64,
    pub l2_len: u8,
    pub l3_len: u16,
    pub l4_len: u8,
    pub tso_segsz: u16,
}

/// The transmit flags `TxOffload` carries.
pub mod tx_flags {
    use crate::ffi;
    pub const TCP_SEG: u64 = ffi::RTE_MBUF_F_TX_TCP_SEG;
    pub const TCP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_TCP_CKSUM;
    pub const UDP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_UDP_CKSUM;
    /// The two bits above share a two-bit field (DPDK's L4 mask).
    pub const L4_MASK: u64 = ffi::RTE_MBUF_F_TX_L4_MASK;
    pub const IP_CKSUM: u64 = ffi::RTE_MBUF_F_TX_IP_CKSUM;
    pub const IPV4: u64 = ffi::RTE_MBUF_F_TX_IPV4;
    pub const IPV6: u64 = ffi::RTE_MBUF_F_TX_IPV6;
    pub const ALL: u64 = TCP_SEG | L4_MASK | IP_CKSUM | IPV4 | IPV6;
}

// tx_offload's bit layout (rte_mbuf_core.h): l2_len 7 bits, l3_len 9,
// l4_len 8, tso_segsz 16, then the outer lengths we never set.
const L3_SHIFT: u32 = 7;
const L4_SHIFT: u32 = 16;
const TSO_SHIFT: u32 = 24;

impl Mbuf {
    /// The transmit offloads the first segment asks for.
    #[inline]
    pub fn tx_offload(&self) -> TxOffload {
        let m = self.raw();
        let flags = m.ol_flags & tx_flags::ALL;
        if flags == 0 {
            return TxOffload::default();
        }
        // SAFETY: tx_offload is a plain u64 view of the union.
        let t = unsafe { m.__bindgen_anon_3.tx_offload };
        TxOffload {
            flags,
            l2_len: (t & 0x7f) as u8,
            l3_len: ((t >> L3_SHIFT) & 0x1ff) as u16,
            l4_len: ((t >> L4_SHIFT) & 0xff) as u8,
            tso_segsz: ((t >> TSO_SHIFT) & 0xffff) as u16,
        }
    }

    /// Sets the transmit offloads (replacing any); false, changing nothing,
    /// if the head is shared or a length does not fit its field.
    #[inline]
    pub fn set_tx_offload(&mut self, o: TxOffload) -> bool {
        if refcnt(self.raw()).load(Ordering::Acquire) != 1 || o.l2_len > 0x7f || o.l3_len > 0x1ff {
            return false;
        }
        let t = o.l2_len as u64 | (o.l3_len as u64) << L3_SHIFT | (o.l4_len as u64) << L4_SHIFT | (o.tso_segsz as u64) << TSO_SHIFT;
        // SAFETY: we hold the head's only reference, so nothing else reads
        // its metadata while we write it.
        unsafe {
            let m = self.0.as_ptr();
            (*m).ol_flags = ((*m).ol_flags & !tx_flags::ALL) | (o.flags & tx_flags::ALL);
            (*m).__bindgen_anon_3.tx_offload = t;
        }
        true
    }
}

/// Whether no other mbuf points at segment `s`'s data buffer, and it is not
/// guest memory.
fn data_exclusive(s: &ffi::rte_mbuf) -> bool {
    if s.ol_flags & IND_ATTACHED != 0 {
        // SAFETY: an indirect segment's buffer belongs to a live direct mbuf
        // placed just before it (rte_mbuf_from_indirect).
        let direct = unsafe { &*(s.buf_addr as *const u8).sub(std::mem::size_of::<ffi::rte_mbuf>() + s.priv_size as usize).cast::<ffi::rte_mbuf>() };
        refcnt(direct).load(Ordering::Acquire) == 1
    } else if s.ol_flags & EXT_ATTACHED != 0 {
        // SAFETY: an external segment has a valid shared-info block, whose
        // count DPDK updates atomically.
        let info = unsafe { &*s.shinfo };
        // SAFETY: as above.
        !crate::extbuf::is_guest_buffer(info) && unsafe { AtomicU16::from_ptr(std::ptr::addr_of!(info.refcnt).cast_mut()) }.load(Ordering::Acquire) == 1
    } else {
        true
    }
}

/// A segment's reference count, which DPDK updates with atomic operations.
#[inline(always)]
fn refcnt(m: &ffi::rte_mbuf) -> &AtomicU16 {
    // SAFETY: the field is a naturally aligned u16 inside a live mbuf, only
    // ever accessed atomically by DPDK (RTE_MBUF_REFCNT_ATOMIC) and by us.
    unsafe { AtomicU16::from_ptr(std::ptr::addr_of!(m.refcnt).cast_mut()) }
}

fn seg_data(m: &ffi::rte_mbuf) -> &[u8] {
    // SAFETY: a segment's valid data is data_len bytes at buf_addr + data_off,
    // alive as long as the segment is; writers need exclusive access.
    unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference; rte_pktmbuf_free drops it on every
        // segment and returns segments whose count reaches zero.
        unsafe { ffi::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.len())
            .field("nb_segs", &self.nb_segs())
            .field("refcnt", &self.refcnt())
            .finish()
    }
}

#[cfg(test)]
mod layout {
    use std::mem::offset_of;

    use crate::ffi::rte_mbuf;

    // Fields read directly on the fast path: their offsets in DPDK 22.11's
    // rte_mbuf (rte_mbuf_core.h). A DPDK whose layout differs fails here.
    #[test]
    fn mbuf_field_offsets() {
        assert_eq!(offset_of!(rte_mbuf, buf_addr), 0);
        assert_eq!(offset_of!(rte_mbuf, data_off), 16);
        assert_eq!(offset_of!(rte_mbuf, refcnt), 18);
        assert_eq!(offset_of!(rte_mbuf, nb_segs), 20);
        assert_eq!(offset_of!(rte_mbuf, port), 22);
        assert_eq!(offset_of!(rte_mbuf, ol_flags), 24);
        assert_eq!(offset_of!(rte_mbuf, pkt_len), 36);
        assert_eq!(offset_of!(rte_mbuf, data_len), 40);
        assert_eq!(offset_of!(rte_mbuf, vlan_tci), 42);
        assert_eq!(offset_of!(rte_mbuf, buf_len), 54);
        assert_eq!(offset_of!(rte_mbuf, pool), 56);
        assert_eq!(offset_of!(rte_mbuf, next), 64);
        assert_eq!(offset_of!(rte_mbuf, __bindgen_anon_3), 72, "tx_offload");
        assert_eq!(offset_of!(rte_mbuf, shinfo), 80);
        assert_eq!(std::mem::size_of::<rte_mbuf>(), 128);
    }
}
