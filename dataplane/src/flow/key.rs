//! What a flow matches on: the fields of a packet as one fixed array of
//! words (`FlowKey`), and a flow's match as a value and a mask of the same
//! shape, so a match is eight AND-and-compare steps whatever it names.
//!
//! `Match` is the same match field by field, as OpenFlow states it (each
//! field absent, exact or masked): what the control side decodes, shows
//! and encodes back.
use crate::parse::{Mac, ETHERTYPE_VLAN};

pub const KEY_WORDS: usize = 8;

/// OpenFlow's VLAN_VID "a tag is present" bit; 0 alone means no tag.
pub const VID_PRESENT: u16 = 0x1000;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A packet's fields. Word 0: in_port (16 bits), eth_type (16), VLAN_VID
/// with its present bit (16), ip_proto (8); 1: eth_dst, tp_dst; 2:
/// eth_src, tp_src; 3: IPv4 src, dst; 4-5: IPv6 src; 6-7: IPv6 dst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey(pub [u64; KEY_WORDS]);

fn mac_word(m: &Mac) -> u64 {
    m.iter().fold(0, |acc, &b| acc << 8 | u64::from(b))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl FlowKey {
    /// The fields of the frame whose first bytes are `h`, received on
    /// OpenFlow port `in_port`. What the bytes do not reach stays zero: a
    /// short or odd frame matches only flows that do not ask for more.
    pub fn extract(h: &[u8], in_port: u16) -> FlowKey {
        let mut k = [0u64; KEY_WORDS];
        k[0] = u64::from(in_port);
        if h.len() < 14 {
            return FlowKey(k);
        }
        let dst: Mac = h[0..6].try_into().expect("6 bytes");
        let src: Mac = h[6..12].try_into().expect("6 bytes");
        let (mut ty, mut l3, mut vid) = (be16(h, 12), 14, 0u16);
        if ty == ETHERTYPE_VLAN && h.len() >= 18 {
            vid = VID_PRESENT | (be16(h, 14) & 0x0fff);
            ty = be16(h, 16);
            l3 = 18;
        }
        let (mut proto, mut l4) = (0u8, None);
        match ty {
            ETHERTYPE_IPV4 if h.len() >= l3 + 20 => {
                proto = h[l3 + 9];
                k[3] = u64::from(be32(h, l3 + 12)) << 32 | u64::from(be32(h, l3 + 16));
                // Only a first fragment (or none) carries the ports.
                let first = be16(h, l3 + 6) & 0x1fff == 0;
                l4 = first.then_some(l3 + usize::from(h[l3] & 0x0f) * 4);
            }
            ETHERTYPE_IPV6 if h.len() >= l3 + 40 => {
                proto = h[l3 + 6];
                k[4] = be64(h, l3 + 8);
                k[5] = be64(h, l3 + 16);
                k[6] = be64(h, l3 + 24);
                k[7] = be64(h, l3 + 32);
                l4 = Some(l3 + 40);
            }
            _ => {}
        }
        let (mut tp_src, mut tp_dst) = (0u64, 0u64);
        if let Some(at) = l4.filter(|&at| (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && h.len() >= at + 4) {
            tp_src = be16(h, at).into();
            tp_dst = be16(h, at + 2).into();
        }
        k[0] |= u64::from(ty) << 16 | u64::from(vid) << 32 | u64::from(proto) << 48;
        k[1] = mac_word(&dst) | tp_dst << 48;
        k[2] = mac_word(&src) | tp_src << 48;
        FlowKey(k)
    }

    #[inline]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut k = self.0;
        for (w, m) in k.iter_mut().zip(mask.0) {
            *w &= m;
        }
        FlowKey(k)
    }

    /// A well mixed hash (the exact-match cache's index).
    #[inline]
    pub fn hash(&self) -> u64 {
        self.0.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &w| (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29))
    }
}

/// A field's value and mask (all ones: exact).
pub type Masked<T> = (T, T);

/// A flow's match, field by field (None: any value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub in_port: Option<u16>,
    pub eth_dst: Option<Masked<Mac>>,
    pub eth_src: Option<Masked<Mac>>,
    pub eth_type: Option<u16>,
    /// With `VID_PRESENT` as OpenFlow has it: `(0, 0xffff)` is "untagged",
    /// `(VID_PRESENT, VID_PRESENT)` "any tag".
    pub vlan_vid: Option<Masked<u16>>,
    pub ip_proto: Option<u8>,
    pub ipv4_src: Option<Masked<u32>>,
    pub ipv4_dst: Option<Masked<u32>>,
    pub ipv6_src: Option<Masked<u128>>,
    pub ipv6_dst: Option<Masked<u128>>,
    /// TCP or UDP ports (`ip_proto` says which).
    pub tp_src: Option<u16>,
    pub tp_dst: Option<u16>,
}

/// Why a match cannot be used: a field without the one it depends on
/// (OpenFlow's BAD_PREREQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPrereq;

impl Match {
    /// OpenFlow's prerequisites: IP fields need an IP eth_type, ports need
    /// ip_proto TCP or UDP.
    pub fn check(&self) -> Result<(), BadPrereq> {
        let ip = matches!(self.eth_type, Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6));
        let v4 = self.eth_type == Some(ETHERTYPE_IPV4);
        let v6 = self.eth_type == Some(ETHERTYPE_IPV6);
        let ports = matches!(self.ip_proto, Some(IPPROTO_TCP | IPPROTO_UDP));
        let ok = (self.ip_proto.is_none() || ip)
            && (self.ipv4_src.is_none() && self.ipv4_dst.is_none() || v4)
            && (self.ipv6_src.is_none() && self.ipv6_dst.is_none() || v6)
            && (self.tp_src.is_none() && self.tp_dst.is_none() || ports && ip);
        ok.then_some(()).ok_or(BadPrereq)
    }

    /// The value and mask words; the value already masked.
    pub fn compile(&self) -> (FlowKey, FlowKey) {
        let (mut v, mut m) = ([0u64; KEY_WORDS], [0u64; KEY_WORDS]);
        let mut put = |w: usize, shift: u32, width: u32, (val, mask): (u64, u64)| {
            let ones = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
            v[w] |= (val & mask & ones) << shift;
            m[w] |= (mask & ones) << shift;
        };
        let exact = |x: u64| (x, u64::MAX);
        let mac = |(a, b): Masked<Mac>| (mac_word(&a), mac_word(&b));
        let hi = |(a, b): Masked<u128>| ((a >> 64) as u64, (b >> 64) as u64);
        let lo = |(a, b): Masked<u128>| (a as u64, b as u64);
        if let Some(p) = self.in_port {
            put(0, 0, 16, exact(p.into()));
        }
        if let Some(t) = self.eth_type {
            put(0, 16, 16, exact(t.into()));
        }
        if let Some((val, mask)) = self.vlan_vid {
            put(0, 32, 16, (val.into(), (mask & 0x1fff).into()));
        }
        if let Some(p) = self.ip_proto {
            put(0, 48, 8, exact(p.into()));
        }
        if let Some(d) = self.eth_dst {
            put(1, 0, 48, mac(d));
        }
        if let Some(p) = self.tp_dst {
            put(1, 48, 16, exact(p.into()));
        }
        if let Some(s) = self.eth_src {
            put(2, 0, 48, mac(s));
        }
        if let Some(p) = self.tp_src {
            put(2, 48, 16, exact(p.into()));
        }
        if let Some((a, b)) = self.ipv4_src {
            put(3, 32, 32, (a.into(), b.into()));
        }
        if let Some((a, b)) = self.ipv4_dst {
            put(3, 0, 32, (a.into(), b.into()));
        }
        if let Some(s) = self.ipv6_src {
            put(4, 0, 64, hi(s));
            put(5, 0, 64, lo(s));
        }
        if let Some(d) = self.ipv6_dst {
            put(6, 0, 64, hi(d));
            put(7, 0, 64, lo(d));
        }
        (FlowKey(v), FlowKey(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: Option<u16>, ty: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if let Some(t) = tag {
            f.extend_from_slice(&[0x81, 0, (t >> 8) as u8, t as u8]);
        }
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, (frag >> 8) as u8, frag as u8, 64, proto, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(l4);
        h
    }

    fn hits(m: &Match, k: &FlowKey) -> bool {
        let (v, mask) = m.compile();
        k.masked(&mask) == v
    }

    #[test]
    fn fields_of_a_tagged_tcp_segment() {
        let f = frame(Some(0x2000 | 10), ETHERTYPE_IPV4, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], 0, &[0x04, 0xd2, 0x00, 0x50]));
        let k = FlowKey::extract(&f, 3);
        let m = Match {
            in_port: Some(3),
            eth_src: Some(([2, 0, 0, 0, 0, 1], [0xff; 6])),
            eth_type: Some(ETHERTYPE_IPV4),
            vlan_vid: Some((VID_PRESENT | 10, 0x1fff)),
            ip_proto: Some(6),
            ipv4_src: Some((0x0a00_0000, 0xff00_0000)),
            ipv4_dst: Some((0x0a00_0002, u32::MAX)),
            tp_src: Some(1234),
            tp_dst: Some(80),
            ..Match::default()
        };
        assert!(m.check().is_ok());
        assert!(hits(&m, &k));
        for wrong in [
            Match { in_port: Some(4), ..m.clone() },
            Match { tp_dst: Some(81), ..m.clone() },
            Match { vlan_vid: Some((0, 0xffff)), ..m.clone() },
            Match { ipv4_src: Some((0x0b00_0000, 0xff00_0000)), ..m.clone() },
            Match { eth_dst: Some(([2, 0, 0, 0, 0, 1], [0xff; 6])), ..m.clone() },
        ] {
            assert!(!hits(&wrong, &k), "{wrong:?}");
        }
        // Any tag, and an empty match, hit too.
        assert!(hits(&Match { vlan_vid: Some((VID_PRESENT, VID_PRESENT)), ..Match::default() }, &k));
        assert!(hits(&Match::default(), &k));
    }

    #[test]
    fn untagged_ipv6_udp_and_masks() {
        let mut l3 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        l3.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].iter().chain(&[0; 11]).chain(&[1]).copied().collect::<Vec<u8>>());
        l3.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8].iter().chain(&[0; 11]).chain(&[2]).copied().collect::<Vec<u8>>());
        l3.extend_from_slice(&[0, 53, 0, 54]);
        let k = FlowKey::extract(&frame(None, ETHERTYPE_IPV6, &l3), 1);
        let net = 0x2001_0db8u128 << 96;
        let m = Match { eth_type: Some(ETHERTYPE_IPV6), ipv6_dst: Some((net | 2, u128::MAX)), ip_proto: Some(17), tp_src: Some(53), ..Match::default() };
        assert!(hits(&m, &k));
        assert!(hits(&Match { ipv6_src: Some((net, !0u128 << 64)), eth_type: Some(ETHERTYPE_IPV6), ..Match::default() }, &k));
        assert!(!hits(&Match { ipv6_src: Some((net | 2, u128::MAX)), ..m.clone() }, &k));
        assert!(hits(&Match { vlan_vid: Some((0, 0x1fff)), ..Match::default() }, &k), "untagged");
        // An eth_src mask that only keeps the locally administered bit.
        assert!(hits(&Match { eth_src: Some(([2, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0])), ..Match::default() }, &k));
    }

    #[test]
    fn later_fragments_and_short_frames_carry_no_ports() {
        let f = frame(None, ETHERTYPE_IPV4, &ipv4(17, [1, 1, 1, 1], [2, 2, 2, 2], 0x0010, &[0, 53, 0, 53]));
        let k = FlowKey::extract(&f, 1);
        assert_eq!(k.0[1] >> 48, 0);
        assert_eq!(k.0[3], 0x0101_0101_0202_0202);
        let short = FlowKey::extract(&f[..20], 1);
        assert_eq!(short.0[3], 0, "IPv4 header not all there: no addresses");
        assert_eq!(FlowKey::extract(&f[..10], 7), FlowKey([7, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn prerequisites() {
        assert_eq!(Match { ip_proto: Some(6), ..Match::default() }.check(), Err(BadPrereq));
        assert_eq!(Match { eth_type: Some(ETHERTYPE_IPV6), ipv4_src: Some((1, 1)), ..Match::default() }.check(), Err(BadPrereq));
        assert_eq!(Match { eth_type: Some(ETHERTYPE_IPV4), tp_dst: Some(80), ..Match::default() }.check(), Err(BadPrereq));
        assert!(Match { eth_type: Some(ETHERTYPE_IPV4), ip_proto: Some(17), tp_dst: Some(53), ..Match::default() }.check().is_ok());
    }
}
