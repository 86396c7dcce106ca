//! Ethernet and 802.1Q header parsing over the first bytes of a frame.
//!
//! The view is checked once (`EthHeader::parse`); after that no accessor can
//! fail. Only the first segment is read: every PMD here puts at least the
//! first 64 bytes of a frame in its first segment, and a frame whose first
//! segment is too short for its headers is treated as malformed.
use crate::counters::DropReason;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag: not terminated here, so such frames are malformed
/// for a port that expects customer tags.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub type Mac = [u8; 6];

/// What the switch needs from a frame's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    /// The 802.1Q VLAN id, if the frame carries a tag (0 = priority tag).
    pub vlan: Option<u16>,
    /// EtherType after any tag.
    pub ethertype: u16,
}

impl EthHeader {
    /// Parses `head` (the first segment of a frame). Fails on a frame too
    /// short for its headers, a stacked or service tag, or a multicast
    /// source address (never valid, and it would poison the MAC table).
    #[inline]
    pub fn parse(head: &[u8]) -> Result<EthHeader, DropReason> {
        if head.len() < ETH_HLEN {
            return Err(DropReason::Runt);
        }
        let dst: Mac = head[0..6].try_into().expect("6 bytes");
        let src: Mac = head[6..12].try_into().expect("6 bytes");
        if is_multicast(&src) {
            return Err(DropReason::Malformed);
        }
        let outer = u16::from_be_bytes([head[12], head[13]]);
        let (vlan, ethertype) = match outer {
            ETHERTYPE_VLAN => {
                if head.len() < ETH_HLEN + VLAN_HLEN {
                    return Err(DropReason::Runt);
                }
                let tci = u16::from_be_bytes([head[14], head[15]]);
                let inner = u16::from_be_bytes([head[16], head[17]]);
                if inner == ETHERTYPE_VLAN || inner == ETHERTYPE_QINQ {
                    return Err(DropReason::Malformed);
                }
                (Some(tci & 0x0fff), inner)
            }
            ETHERTYPE_QINQ => return Err(DropReason::Malformed),
            t => (None, t),
        };
        Ok(EthHeader { dst, src, vlan, ethertype })
    }

    /// Length of the L2 header (with the tag, if any).
    #[inline]
    pub fn header_len(&self) -> usize {
        ETH_HLEN + if self.vlan.is_some() { VLAN_HLEN } else { 0 }
    }
}

#[inline]
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x52, 0x54, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0x00, 0x01,
    ];
    const TAGGED: [u8; 20] = [
        0x52, 0x54, 0x00, 0x00, 0x00, 0x02, // dst
        0x52, 0x54, 0x00, 0x00, 0x00, 0x01, // src
        0x81, 0x00, 0x20, 0x0a, // 802.1Q, PCP 1, VID 10
        0x08, 0x00, // IPv4
        0x45, 0x00,
    ];

    #[test]
    fn untagged_frame() {
        let h = EthHeader::parse(&UNTAGGED).unwrap();
        assert_eq!(h.dst, [0xff; 6]);
        assert_eq!(h.src, [0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!((h.vlan, h.ethertype, h.header_len()), (None, 0x0806, 14));
        assert!(is_multicast(&h.dst));
    }

    #[test]
    fn tagged_frame_keeps_vid_without_pcp() {
        let h = EthHeader::parse(&TAGGED).unwrap();
        assert_eq!((h.vlan, h.ethertype, h.header_len()), (Some(10), 0x0800, 18));
    }

    #[test]
    fn truncated_headers_are_runts() {
        for n in 0..ETH_HLEN {
            assert_eq!(EthHeader::parse(&UNTAGGED[..n]), Err(DropReason::Runt), "{n} bytes");
        }
        for n in ETH_HLEN..ETH_HLEN + VLAN_HLEN {
            assert_eq!(EthHeader::parse(&TAGGED[..n]), Err(DropReason::Runt), "{n} bytes");
        }
        assert!(EthHeader::parse(&UNTAGGED[..ETH_HLEN]).is_ok(), "a bare header is enough");
    }

    #[test]
    fn malformed_frames() {
        let mut f = UNTAGGED;
        f[6] |= 1; // multicast source
        assert_eq!(EthHeader::parse(&f), Err(DropReason::Malformed));
        let mut f = TAGGED;
        f[16..18].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes()); // stacked tags
        assert_eq!(EthHeader::parse(&f), Err(DropReason::Malformed));
        let mut f = TAGGED;
        f[12..14].copy_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
        assert_eq!(EthHeader::parse(&f), Err(DropReason::Malformed));
    }
}
