//! VXLAN's wire formats (RFC 7348 over IPv4 and UDP, and ARP for the
//! underlay's next hops): checked views over the first bytes of a frame,
//! in the manner of smoltcp. A view is checked once, when made; after
//! that no accessor can fail or read past the bytes it was made over.
use std::net::Ipv4Addr;

use crate::parse::{Mac, ETH_HLEN};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const IPV4_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const VXLAN_HLEN: usize = 8;
/// What encapsulation puts in front of a frame: Ethernet, IPv4 without
/// options, UDP, VXLAN.
pub const OUTER_LEN: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;
/// The IP bytes encapsulation adds to a frame (what the underlay's MTU,
/// an L3 size, must hold besides the frame).
pub const OUTER_L3_LEN: usize = OUTER_LEN - ETH_HLEN;
/// IANA's VXLAN port.
pub const UDP_PORT: u16 = 4789;
const PROTO_UDP: u8 = 17;
/// The "I" flag: the VNI is valid. The only flag RFC 7348 defines.
const FLAG_VNI: u8 = 0x08;
/// Source ports are drawn from the dynamic range (RFC 7348 section 5).
const SPORT_BASE: u16 = 49152;
pub const ARP_LEN: usize = 28;

/// Why an IPv4/UDP frame to the VXLAN port is not a VXLAN packet we take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its headers say, or than an inner Ethernet header.
    Short,
    /// The I flag clear, or a flag RFC 7348 does not define set.
    Flags,
    /// An IP fragment (never reassembled) or a bad IPv4 header checksum.
    Ip,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// The one's complement sum of `b` in 16-bit words, folded.
pub fn ones_sum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A VXLAN packet's outer headers, checked: what decapsulation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    pub src_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub vni: u32,
    /// Where the inner frame starts in the underlay frame, and its length
    /// (the UDP length's, not the frame's: an underlay pads short frames).
    pub inner_at: usize,
    pub inner_len: usize,
}

impl Outer {
    /// `Ok(None)`: not IPv4/UDP to port 4789 (not ours to judge). The
    /// frame is untagged (an underlay port is an access port).
    pub fn parse(f: &[u8]) -> Result<Option<Outer>, Malformed> {
        if f.len() < ETH_HLEN + IPV4_HLEN || be16(f, 12) != ETHERTYPE_IPV4 {
            return Ok(None);
        }
        let ip = &f[ETH_HLEN..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ip[9] != PROTO_UDP || ihl < IPV4_HLEN {
            return Ok(None);
        }
        if ip.len() < ihl + UDP_HLEN {
            return Err(Malformed::Short);
        }
        if be16(ip, ihl + 2) != UDP_PORT {
            return Ok(None);
        }
        // More-fragments set or an offset: a piece we do not reassemble.
        if be16(ip, 6) & 0x3fff != 0 || ones_sum(&ip[..ihl]) != 0xffff {
            return Err(Malformed::Ip);
        }
        let total = usize::from(be16(ip, 2));
        let udp_len = usize::from(be16(ip, ihl + 4));
        if total > ip.len() || udp_len + ihl > total || udp_len < UDP_HLEN + VXLAN_HLEN + ETH_HLEN {
            return Err(Malformed::Short);
        }
        let vx = &ip[ihl + UDP_HLEN..];
        if vx[0] != FLAG_VNI {
            return Err(Malformed::Flags);
        }
        Ok(Some(Outer {
            src_mac: f[6..12].try_into().expect("6 bytes"),
            src_ip: ip4(ip, 12),
            dst_ip: ip4(ip, 16),
            vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
            inner_at: ETH_HLEN + ihl + UDP_HLEN + VXLAN_HLEN,
            inner_len: udp_len - UDP_HLEN - VXLAN_HLEN,
        }))
    }
}

/// What encapsulation writes, but for the per-packet lengths, checksum
/// and source port: built once per tunnel and next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encap {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub vni: u32,
}

impl Encap {
    /// Writes the outer headers of a frame of `inner_len` bytes. The IPv4
    /// checksum is left 0 when `ip_csum_offload` (the NIC fills it); the
    /// UDP checksum is 0, which RFC 7348 allows over IPv4.
    pub fn write(&self, out: &mut [u8; OUTER_LEN], inner_len: usize, sport: u16, ip_csum_offload: bool) {
        let ip_len = (inner_len + OUTER_L3_LEN) as u16;
        let udp_len = ip_len - IPV4_HLEN as u16;
        out[0..6].copy_from_slice(&self.dst_mac);
        out[6..12].copy_from_slice(&self.src_mac);
        out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = &mut out[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
        // Version 4, IHL 5; DSCP 0; DF set: the underlay never fragments.
        ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, PROTO_UDP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[12..16].copy_from_slice(&self.src_ip.octets());
        ip[16..20].copy_from_slice(&self.dst_ip.octets());
        if !ip_csum_offload {
            let c = !ones_sum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let udp = &mut out[ETH_HLEN + IPV4_HLEN..ETH_HLEN + IPV4_HLEN + UDP_HLEN];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&UDP_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let vx = &mut out[ETH_HLEN + IPV4_HLEN + UDP_HLEN..];
        let vni = self.vni.to_be_bytes();
        vx.copy_from_slice(&[FLAG_VNI, 0, 0, 0, vni[1], vni[2], vni[3], 0]);
    }
}

/// The outer UDP source port: a hash of the inner frame's addresses (and,
/// for IPv4, its IP addresses and ports), so that one flow keeps one path
/// through an ECMP underlay and flows spread over its paths.
pub fn source_port(inner: &[u8]) -> u16 {
    let n = inner.len();
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |w: u64| {
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    };
    // Little-endian words, a short one zero-extended; fixed-size loads
    // rather than a copy per word (a call, then a stalled reload).
    let word = |b: &[u8], at: usize, len: usize| b[at..at + len].iter().rev().fold(0u64, |w, &x| w << 8 | u64::from(x));
    match n {
        12.. => {
            mix(word(inner, 0, 8));
            mix(word(inner, 8, 4));
        }
        _ => inner.chunks(8).for_each(|c| mix(word(c, 0, c.len()))),
    }
    if n >= ETH_HLEN + IPV4_HLEN && be16(inner, 12) == ETHERTYPE_IPV4 {
        let ip = &inner[ETH_HLEN..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        mix(word(ip, 12, 8));
        // TCP and UDP ports, when the first fragment carries them.
        if matches!(ip[9], 6 | 17) && be16(ip, 6) & 0x1fff == 0 && ip.len() >= ihl + 4 {
            mix(word(ip, ihl, 4));
        }
    }
    SPORT_BASE | (h >> 48) as u16 & 0x3fff
}

/// An ARP packet for IPv4 over Ethernet, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tpa: Ipv4Addr,
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

impl Arp {
    /// None: not ARP, or not IPv4 over Ethernet, or short.
    pub fn parse(f: &[u8]) -> Option<Arp> {
        if f.len() < ETH_HLEN + ARP_LEN || be16(f, 12) != ETHERTYPE_ARP {
            return None;
        }
        let a = &f[ETH_HLEN..];
        if be16(a, 0) != 1 || be16(a, 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
            return None;
        }
        Some(Arp { op: be16(a, 6), sha: a[8..14].try_into().expect("6 bytes"), spa: ip4(a, 14), tpa: ip4(a, 24) })
    }

    /// A whole frame: `op` from `sha`/`spa` to `tha`/`tpa`, sent to
    /// `eth_dst` (broadcast for a request).
    pub fn frame(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr, eth_dst: Mac) -> [u8; ETH_HLEN + ARP_LEN] {
        let mut f = [0u8; ETH_HLEN + ARP_LEN];
        f[0..6].copy_from_slice(&eth_dst);
        f[6..12].copy_from_slice(&sha);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let a = &mut f[ETH_HLEN..];
        a[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
        a[8..14].copy_from_slice(&sha);
        a[14..18].copy_from_slice(&spa.octets());
        a[18..24].copy_from_slice(&tha);
        a[24..28].copy_from_slice(&tpa.octets());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];

    fn inner(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&B);
        f[6..12].copy_from_slice(&A);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6; // TCP
        f[26..30].copy_from_slice(&[192, 168, 0, 1]);
        f[30..34].copy_from_slice(&[192, 168, 0, 2]);
        f[34..38].copy_from_slice(&[0x30, 0x39, 0, 80]);
        f
    }

    fn encap() -> Encap {
        Encap { src_mac: A, dst_mac: B, src_ip: "10.0.0.1".parse().unwrap(), dst_ip: "10.0.0.2".parse().unwrap(), vni: 0x12_3456 }
    }

    fn packet(inner_len: usize) -> Vec<u8> {
        let mut hdr = [0u8; OUTER_LEN];
        let f = inner(inner_len);
        encap().write(&mut hdr, f.len(), source_port(&f), false);
        [&hdr[..], &f].concat()
    }

    #[test]
    fn encap_then_parse_round_trips() {
        let p = packet(100);
        let o = Outer::parse(&p).unwrap().unwrap();
        let want = Outer { src_mac: A, src_ip: encap().src_ip, dst_ip: encap().dst_ip, vni: 0x12_3456, inner_at: OUTER_LEN, inner_len: 100 };
        assert_eq!(o, want);
        assert_eq!(&p[o.inner_at..], &inner(100)[..]);
        assert_eq!(ones_sum(&p[ETH_HLEN..ETH_HLEN + IPV4_HLEN]), 0xffff, "a valid IPv4 checksum");
        assert_eq!(be16(&p, ETH_HLEN + 2) as usize, 100 + OUTER_L3_LEN);
        assert_eq!(p[ETH_HLEN + 6] & 0x40, 0x40, "DF set");
    }

    #[test]
    fn offloaded_checksum_is_left_zero() {
        let mut hdr = [0xffu8; OUTER_LEN];
        encap().write(&mut hdr, 60, 50000, true);
        assert_eq!(&hdr[ETH_HLEN + 10..ETH_HLEN + 12], &[0, 0]);
    }

    #[test]
    fn padding_beyond_the_udp_length_is_not_inner_frame() {
        let mut p = packet(60);
        p.extend_from_slice(&[0; 10]);
        assert_eq!(Outer::parse(&p).unwrap().unwrap().inner_len, 60);
    }

    #[test]
    fn malformed_packets_are_told_apart() {
        let p = packet(60);
        for cut in [ETH_HLEN + IPV4_HLEN + 4, OUTER_LEN - 1, OUTER_LEN + 10] {
            assert_eq!(Outer::parse(&p[..cut]), Err(Malformed::Short), "cut at {cut}");
        }
        let mut flags = p.clone();
        flags[ETH_HLEN + IPV4_HLEN + UDP_HLEN] = 0;
        assert_eq!(Outer::parse(&flags), Err(Malformed::Flags));
        flags[ETH_HLEN + IPV4_HLEN + UDP_HLEN] = 0x0c;
        assert_eq!(Outer::parse(&flags), Err(Malformed::Flags));
        let mut frag = p.clone();
        frag[ETH_HLEN + 6] = 0x20; // more fragments
        assert_eq!(Outer::parse(&frag), Err(Malformed::Ip));
        let mut csum = p.clone();
        csum[ETH_HLEN + 8] ^= 1; // TTL changed, checksum not
        assert_eq!(Outer::parse(&csum), Err(Malformed::Ip));
        let mut udp_short = p.clone();
        udp_short[ETH_HLEN + IPV4_HLEN + 4..ETH_HLEN + IPV4_HLEN + 6].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(Outer::parse(&udp_short), Err(Malformed::Short), "room for no inner Ethernet header");
    }

    #[test]
    fn other_traffic_is_not_ours_to_judge() {
        let p = packet(60);
        let mut port = p.clone();
        port[ETH_HLEN + IPV4_HLEN + 3] = 0x99;
        assert_eq!(Outer::parse(&port), Ok(None));
        let mut tcp = p.clone();
        tcp[ETH_HLEN + 9] = 6;
        assert_eq!(Outer::parse(&tcp), Ok(None));
        assert_eq!(Outer::parse(&inner(60)), Ok(None));
        assert_eq!(Outer::parse(&p[..20]), Ok(None));
    }

    #[test]
    fn no_frame_makes_parsing_panic() {
        let mut rng = crate::test_rng::Rng(7);
        let base = packet(80);
        for _ in 0..20_000 {
            let mut p = base.clone();
            for _ in 0..rng.below(4) + 1 {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            p.truncate(rng.below(p.len() + 1));
            if let Ok(Some(o)) = Outer::parse(&p) {
                assert!(o.inner_at + o.inner_len <= p.len());
            }
            let _ = Arp::parse(&p);
            let _ = source_port(&p);
        }
    }

    #[test]
    fn source_port_follows_the_flow() {
        let (a, mut b) = (inner(100), inner(100));
        assert_eq!(source_port(&a), source_port(&inner(1400)), "one flow, one port, whatever the length");
        b[37] = 81; // another TCP destination port
        assert_ne!(source_port(&a), source_port(&b));
        assert!(source_port(&a) >= SPORT_BASE);
        assert!(source_port(&a[..5]) >= SPORT_BASE, "a runt still gets a port");
    }

    #[test]
    fn arp_frames_round_trip() {
        let (ip1, ip2) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let f = Arp::frame(ARP_REQUEST, A, ip1, [0; 6], ip2, [0xff; 6]);
        assert_eq!(Arp::parse(&f), Some(Arp { op: ARP_REQUEST, sha: A, spa: ip1, tpa: ip2 }));
        assert_eq!(Arp::parse(&f[..40]), None);
        let mut v6 = f;
        v6[ETH_HLEN + 2] = 0x86;
        assert_eq!(Arp::parse(&v6), None);
    }
}
