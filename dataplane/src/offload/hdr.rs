//! The virtio-net header (VIRTIO 1.1 5.1.6), the offload features, and the
//! switch's own record of a frame's offloads once validated.
use crate::parse::{ETH_HLEN, VLAN_HLEN};

pub const NEEDS_CSUM: u8 = 1;
pub const DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_GUEST_ECN: u64 = 1 << 9;
pub const F_GUEST_UFO: u64 = 1 << 10;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_HOST_ECN: u64 = 1 << 13;
pub const F_HOST_UFO: u64 = 1 << 14;

/// What a vhost-user port may offer. No UFO: IPv6 dropped UDP
/// fragmentation offload and Linux no longer sends it.
pub const OFFLOAD_FEATURES: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN;

/// Offset of the TCP checksum field in the TCP header.
pub const TCP_CSUM_OFFSET: u16 = 16;

/// The first 10 bytes of the virtio-net header, as the guest wrote them.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl NetHdr {
    pub const LEN: usize = 10;

    pub fn from_bytes(b: [u8; NetHdr::LEN]) -> NetHdr {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        NetHdr { flags: b[0], gso_type: b[1], hdr_len: le(2), gso_size: le(4), csum_start: le(6), csum_offset: le(8) }
    }

    /// Built as a word and a half-word, not byte by byte: stored as two
    /// stores, the bytes are read back by two loads of the same widths. A
    /// load over several narrower stores waits for them to reach the cache
    /// (a store-forwarding stall, 7% of a 64 B frame's cycles in `--bench
    /// vm2vm` when the header was a struct stored field by field).
    pub fn to_bytes(&self) -> [u8; NetHdr::LEN] {
        let lo = u64::from(self.flags)
            | u64::from(self.gso_type) << 8
            | u64::from(self.hdr_len) << 16
            | u64::from(self.gso_size) << 32
            | u64::from(self.csum_start) << 48;
        let mut b = [0u8; NetHdr::LEN];
        b[..8].copy_from_slice(&lo.to_le_bytes());
        b[8..].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Which offloads one side takes: for a guest's transmissions (what the
/// device told it may be sent) or for a receive queue (a guest's or a NIC's).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Caps {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub ecn: bool,
}

impl Caps {
    pub const NONE: Caps = Caps { csum: false, tso4: false, tso6: false, ecn: false };
    pub const ALL: Caps = Caps { csum: true, tso4: true, tso6: true, ecn: true };

    /// What a guest that negotiated `features` may send: CSUM, HOST_*.
    pub fn guest_tx(features: u64) -> Caps {
        Caps::from_bits(features, F_CSUM, F_HOST_TSO4, F_HOST_TSO6, F_HOST_ECN)
    }

    /// What a guest that negotiated `features` may receive: GUEST_*.
    pub fn guest_rx(features: u64) -> Caps {
        Caps::from_bits(features, F_GUEST_CSUM, F_GUEST_TSO4, F_GUEST_TSO6, F_GUEST_ECN)
    }

    /// A driver should not accept TSO without checksum offload, nor ECN
    /// without TSO (VIRTIO 1.1 5.1.3.1); one that does gets only what the
    /// dependencies allow, so no later check has to repeat them.
    fn from_bits(features: u64, csum: u64, tso4: u64, tso6: u64, ecn: u64) -> Caps {
        let has = |bit: u64| features & bit != 0;
        let csum = has(csum);
        let (tso4, tso6) = (csum && has(tso4), csum && has(tso6));
        Caps { csum, tso4, tso6, ecn: (tso4 || tso6) && has(ecn) }
    }
}

/// A partial L4 checksum: sum from `start` to the frame's end, store the
/// result at `start + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Csum {
    pub start: u16,
    pub offset: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    Tcp4,
    Tcp6,
}

/// A TCP segmentation request, with the frame's header lengths as the
/// switch parsed them (never the guest's `hdr_len`, which is only a hint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    /// The first segment carries CWR (GSO_ECN): later ones must not.
    pub ecn: bool,
    pub mss: u16,
    /// 14, or 18 with an 802.1Q tag.
    pub l2_len: u8,
    /// IPv4 with options (20 to 60), or IPv6 without extension headers (40).
    pub l3_len: u8,
    /// TCP with options (20 to 60).
    pub l4_len: u8,
}

impl Gso {
    /// Bytes of headers every segment repeats.
    pub fn hdr_len(&self) -> usize {
        usize::from(self.l2_len) + usize::from(self.l3_len) + usize::from(self.l4_len)
    }

    /// Where the TCP checksum is: what NEEDS_CSUM must say for this frame
    /// and for each of its segments.
    pub fn csum(&self) -> Csum {
        Csum { start: u16::from(self.l2_len) + u16::from(self.l3_len), offset: TCP_CSUM_OFFSET }
    }

    /// The offloads of one segment cut with a partial checksum.
    pub fn segment_offload(&self) -> Offload {
        Offload { csum: Some(self.csum()), gso: None }
    }

    fn gso_type(&self) -> u8 {
        let kind = match self.kind {
            GsoKind::Tcp4 => GSO_TCPV4,
            GsoKind::Tcp6 => GSO_TCPV6,
        };
        kind | if self.ecn { GSO_ECN } else { 0 }
    }
}

/// A frame's validated offload metadata: the switch's own copy, never
/// re-read from the guest. A `gso` always comes with its `csum`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Offload {
    pub csum: Option<Csum>,
    pub gso: Option<Gso>,
}

impl Offload {
    pub const NONE: Offload = Offload { csum: None, gso: None };

    /// Whether an output that takes `rx` can take the frame whole, as is.
    /// False means work first: finish the checksum, or segment.
    pub fn fits(&self, rx: Caps) -> bool {
        let csum_ok = self.csum.is_none() || rx.csum;
        let gso_ok = match self.gso {
            None => true,
            Some(g) => {
                let kind_ok = match g.kind {
                    GsoKind::Tcp4 => rx.tso4,
                    GsoKind::Tcp6 => rx.tso6,
                };
                kind_ok && (!g.ecn || rx.ecn)
            }
        };
        csum_ok && gso_ok
    }

    /// The header for a guest receiving the frame whole (`num_buffers` is
    /// the caller's). DATA_VALID is never needed: a frame whose checksum
    /// the switch finished has a complete one.
    pub fn to_hdr(&self) -> NetHdr {
        let mut h = NetHdr::default();
        if let Some(c) = self.csum {
            h.flags = NEEDS_CSUM;
            h.csum_start = c.start;
            h.csum_offset = c.offset;
        }
        if let Some(g) = self.gso {
            h.gso_type = g.gso_type();
            h.gso_size = g.mss;
            h.hdr_len = g.hdr_len() as u16;
        }
        h
    }

    /// The same offloads after `delta` bytes of L2 header were inserted
    /// (+4: a VLAN tag pushed) or removed (-4: popped). None if the
    /// checksum would start inside the Ethernet header or an offset would
    /// leave its range.
    pub fn shifted(&self, delta: i8) -> Option<Offload> {
        let csum = match self.csum {
            Some(c) => Some(Csum { start: shift(c.start, delta).filter(|&s| usize::from(s) >= ETH_HLEN)?, ..c }),
            None => None,
        };
        let gso = match self.gso {
            Some(g) => {
                let l2_len = shift(u16::from(g.l2_len), delta).and_then(|l| u8::try_from(l).ok());
                let l2_len = l2_len.filter(|&l| usize::from(l) >= ETH_HLEN && usize::from(l) <= ETH_HLEN + VLAN_HLEN)?;
                Some(Gso { l2_len, ..g })
            }
            None => None,
        };
        Some(Offload { csum, gso })
    }
}

fn shift(v: u16, delta: i8) -> Option<u16> {
    u16::try_from(i32::from(v) + i32::from(delta)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4() -> Gso {
        Gso { kind: GsoKind::Tcp4, ecn: false, mss: 1448, l2_len: 14, l3_len: 20, l4_len: 32 }
    }

    fn gso_offload(g: Gso) -> Offload {
        Offload { csum: Some(g.csum()), gso: Some(g) }
    }

    #[test]
    fn net_hdr_bytes_are_little_endian() {
        let b = [1, 0x81, 0x42, 0, 0xa8, 0x05, 0x22, 0, 0x10, 0];
        let h = NetHdr::from_bytes(b);
        assert_eq!(h, NetHdr { flags: 1, gso_type: 0x81, hdr_len: 0x42, gso_size: 1448, csum_start: 34, csum_offset: 16 });
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn caps_follow_the_features_and_their_dependencies() {
        let all = OFFLOAD_FEATURES;
        assert_eq!(Caps::guest_tx(all), Caps::ALL);
        assert_eq!(Caps::guest_rx(all), Caps::ALL);
        assert_eq!(Caps::guest_tx(0), Caps::NONE);
        assert_eq!(Caps::guest_tx(F_GUEST_CSUM | F_GUEST_TSO4), Caps::NONE, "receive features say nothing of sending");
        assert_eq!(Caps::guest_rx(F_GUEST_CSUM | F_GUEST_TSO6), Caps { csum: true, tso6: true, ..Caps::NONE });
        assert_eq!(Caps::guest_tx(F_HOST_TSO4 | F_HOST_ECN), Caps::NONE, "TSO needs CSUM");
        assert_eq!(Caps::guest_tx(F_CSUM | F_HOST_ECN), Caps { csum: true, ..Caps::NONE }, "ECN needs TSO");
        assert_eq!(OFFLOAD_FEATURES & (F_GUEST_UFO | F_HOST_UFO), 0);
    }

    #[test]
    fn fits_needs_every_offload_the_frame_uses() {
        let csum_only = Offload { csum: Some(Csum { start: 34, offset: 6 }), gso: None };
        assert!(Offload::NONE.fits(Caps::NONE));
        assert!(!csum_only.fits(Caps::NONE), "the switch must finish the checksum");
        assert!(csum_only.fits(Caps { csum: true, ..Caps::NONE }));
        let tso = gso_offload(tcp4());
        assert!(tso.fits(Caps::ALL));
        assert!(!tso.fits(Caps { tso4: false, ..Caps::ALL }));
        assert!(tso.fits(Caps { tso6: false, ecn: false, ..Caps::ALL }));
        assert!(!tso.fits(Caps { csum: false, ..Caps::ALL }), "TSO without checksum offload is not a receiver's");
        let ecn = gso_offload(Gso { ecn: true, ..tcp4() });
        assert!(!ecn.fits(Caps { ecn: false, ..Caps::ALL }));
        let tso6 = gso_offload(Gso { kind: GsoKind::Tcp6, l3_len: 40, ..tcp4() });
        assert!(!tso6.fits(Caps { tso6: false, ..Caps::ALL }));
    }

    #[test]
    fn to_hdr_writes_what_a_receiver_needs() {
        assert_eq!(Offload::NONE.to_hdr(), NetHdr::default());
        let csum_only = Offload { csum: Some(Csum { start: 34, offset: 6 }), gso: None };
        assert_eq!(csum_only.to_hdr(), NetHdr { flags: NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..NetHdr::default() });
        let g = Gso { ecn: true, l2_len: 18, ..tcp4() };
        let h = gso_offload(g).to_hdr();
        assert_eq!(h, NetHdr { flags: NEEDS_CSUM, gso_type: GSO_TCPV4 | GSO_ECN, hdr_len: 70, gso_size: 1448, csum_start: 38, csum_offset: 16 });
        let g6 = Gso { kind: GsoKind::Tcp6, l3_len: 40, ..tcp4() };
        assert_eq!(gso_offload(g6).to_hdr().gso_type, GSO_TCPV6);
        assert_eq!(g6.segment_offload().to_hdr(), NetHdr { flags: NEEDS_CSUM, csum_start: 54, csum_offset: 16, ..NetHdr::default() });
    }

    #[test]
    fn shifting_moves_the_checksum_and_l2_length() {
        let o = gso_offload(tcp4());
        let pushed = o.shifted(4).unwrap();
        assert_eq!(pushed, gso_offload(Gso { l2_len: 18, ..tcp4() }));
        assert_eq!(pushed.shifted(-4), Some(o));
        assert_eq!(o.shifted(-4), None, "no tag to pop");
        assert_eq!(pushed.shifted(4), None, "one tag at most");
        assert_eq!(Offload::NONE.shifted(-4), Some(Offload::NONE));
        let c = |start| Offload { csum: Some(Csum { start, offset: 0 }), gso: None };
        assert_eq!(c(18).shifted(-4), Some(c(14)));
        assert_eq!(c(17).shifted(-4), None, "into the Ethernet header");
        assert_eq!(c(u16::MAX).shifted(4), None);
        assert_eq!(c(u16::MAX - 4).shifted(4), Some(c(u16::MAX)));
    }
}
