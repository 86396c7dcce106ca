//! The packet handle the classification stages work on.
//!
//! Parse, learn and forward need only a frame's length and its first bytes.
//! `PacketBuf` gives exactly that, so the same stages serve a packet in an
//! mbuf (the rte_vhost and NIC paths) and, next, a packet whose payload still
//! lies in a guest's buffer with its headers copied to switch-private scratch
//! (the copy-once path). What moves the packet afterwards is the datapath's.
use pmd_bridge::{tx_flags, Mbuf};

/// Where a packet's bytes are, as the stages see them.
pub trait PacketBuf {
    /// Whole frame length.
    fn frame_len(&self) -> usize;
    /// The first bytes of the frame (at least the L2 headers if the frame
    /// has them); bytes the switch may trust not to change under it.
    fn headers(&self) -> &[u8];
    /// For a TCP segment to be cut (TSO): the IP packet each piece becomes,
    /// its IP and TCP headers plus one MSS: what the MTU bounds.
    fn segment_ip_len(&self) -> Option<usize> {
        None
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn frame_len(&self) -> usize {
        self.len()
    }

    #[inline]
    fn headers(&self) -> &[u8] {
        self.data()
    }

    #[inline]
    fn segment_ip_len(&self) -> Option<usize> {
        let o = self.tx_offload();
        (o.flags & tx_flags::TCP_SEG != 0).then(|| o.l3_len as usize + o.l4_len as usize + o.tso_segsz as usize)
    }
}

/// A frame in plain memory: tests and control-plane injection.
impl PacketBuf for [u8] {
    fn frame_len(&self) -> usize {
        self.len()
    }

    fn headers(&self) -> &[u8] {
        self
    }
}
