//! `ofp_match` (OXM TLVs of the OpenFlow basic class) to and from the
//! data path's `Match`. Fields the data path cannot match on are
//! BAD_FIELD; a field twice, DUP_FIELD; a bad mask, BAD_MASK.
use dataplane::flow::key::{IPPROTO_TCP, IPPROTO_UDP};
use dataplane::flow::Match;

use super::wire::{err, Reader, Res, Writer};

const OXM_BASIC: u16 = 0x8000;
const MATCH_OXM: u16 = 1;

pub const IN_PORT: u8 = 0;
pub const ETH_DST: u8 = 3;
pub const ETH_SRC: u8 = 4;
pub const ETH_TYPE: u8 = 5;
pub const VLAN_VID: u8 = 6;
pub const IP_PROTO: u8 = 10;
pub const IPV4_SRC: u8 = 11;
pub const IPV4_DST: u8 = 12;
pub const TCP_SRC: u8 = 13;
pub const TCP_DST: u8 = 14;
pub const UDP_SRC: u8 = 15;
pub const UDP_DST: u8 = 16;
pub const IPV6_SRC: u8 = 26;
pub const IPV6_DST: u8 = 27;

/// One OXM TLV: its field, whether it has a mask, its value bytes
/// followed by the mask's.
pub struct Tlv<'a> {
    pub field: u8,
    pub has_mask: bool,
    pub body: &'a [u8],
}

/// The next TLV in `r`.
pub fn read_tlv<'a>(r: &mut Reader<'a>) -> Res<Tlv<'a>> {
    let class = r.u16()?;
    let fh = r.u8()?;
    let len = r.u8()?;
    let body = r.bytes(len.into())?;
    if class != OXM_BASIC {
        return Err(err::BAD_FIELD);
    }
    Ok(Tlv { field: fh >> 1, has_mask: fh & 1 != 0, body })
}

/// The value and mask of a field `N` bytes wide (exact without a mask).
fn value<const N: usize>(t: &Tlv, maskable: bool) -> Res<([u8; N], [u8; N])> {
    let want = if t.has_mask { 2 * N } else { N };
    if t.body.len() != want {
        return Err(err::BAD_MATCH_LEN);
    }
    if t.has_mask && !maskable {
        return Err(err::BAD_MASK);
    }
    let v: [u8; N] = t.body[..N].try_into().expect("N bytes");
    let m: [u8; N] = if t.has_mask { t.body[N..].try_into().expect("N bytes") } else { [0xff; N] };
    // OpenFlow: a value bit outside its mask is an error.
    if v.iter().zip(&m).any(|(v, m)| v & !m != 0) {
        return Err(err::BAD_VALUE);
    }
    Ok((v, m))
}

fn set<T>(slot: &mut Option<T>, v: T) -> Res<()> {
    if slot.is_some() {
        return Err(err::DUP_FIELD);
    }
    *slot = Some(v);
    Ok(())
}

/// A TLV's value onto `m`.
pub fn apply_tlv(m: &mut Match, t: &Tlv, tp_proto: &mut Option<u8>) -> Res<()> {
    let mut port = |p: &mut Option<u16>, proto: u8| -> Res<()> {
        let (v, _) = value::<2>(t, false)?;
        if tp_proto.is_some_and(|x| x != proto) {
            return Err(err::BAD_PREREQ);
        }
        *tp_proto = Some(proto);
        set(p, u16::from_be_bytes(v))
    };
    match t.field {
        IN_PORT => {
            let (v, _) = value::<4>(t, false)?;
            let p = u16::try_from(u32::from_be_bytes(v)).map_err(|_| err::BAD_VALUE)?;
            set(&mut m.in_port, p)
        }
        ETH_DST => set(&mut m.eth_dst, value::<6>(t, true)?),
        ETH_SRC => set(&mut m.eth_src, value::<6>(t, true)?),
        ETH_TYPE => set(&mut m.eth_type, u16::from_be_bytes(value::<2>(t, false)?.0)),
        VLAN_VID => {
            let (v, k) = value::<2>(t, true)?;
            set(&mut m.vlan_vid, (u16::from_be_bytes(v), u16::from_be_bytes(k)))
        }
        IP_PROTO => set(&mut m.ip_proto, value::<1>(t, false)?.0[0]),
        IPV4_SRC => set(&mut m.ipv4_src, be32(value::<4>(t, true)?)),
        IPV4_DST => set(&mut m.ipv4_dst, be32(value::<4>(t, true)?)),
        IPV6_SRC => set(&mut m.ipv6_src, be128(value::<16>(t, true)?)),
        IPV6_DST => set(&mut m.ipv6_dst, be128(value::<16>(t, true)?)),
        TCP_SRC => port(&mut m.tp_src, IPPROTO_TCP),
        TCP_DST => port(&mut m.tp_dst, IPPROTO_TCP),
        UDP_SRC => port(&mut m.tp_src, IPPROTO_UDP),
        UDP_DST => port(&mut m.tp_dst, IPPROTO_UDP),
        _ => Err(err::BAD_FIELD),
    }
}

fn be32((v, m): ([u8; 4], [u8; 4])) -> (u32, u32) {
    (u32::from_be_bytes(v), u32::from_be_bytes(m))
}

fn be128((v, m): ([u8; 16], [u8; 16])) -> (u128, u128) {
    (u128::from_be_bytes(v), u128::from_be_bytes(m))
}

/// Reads an `ofp_match` (with its padding to 8 bytes).
pub fn read_match(r: &mut Reader) -> Res<Match> {
    let kind = r.u16()?;
    let len = r.u16()? as usize;
    if kind != MATCH_OXM {
        return Err(err::BAD_MATCH_TYPE);
    }
    if len < 4 {
        return Err(err::BAD_MATCH_LEN);
    }
    let mut body = Reader::with_short(r.bytes(len - 4).map_err(|_| err::BAD_MATCH_LEN)?, err::BAD_MATCH_LEN);
    r.skip((8 - len % 8) % 8).map_err(|_| err::BAD_MATCH_LEN)?;
    let mut m = Match::default();
    let mut tp_proto = None;
    while !body.is_empty() {
        let t = read_tlv(&mut body)?;
        apply_tlv(&mut m, &t, &mut tp_proto)?;
    }
    if tp_proto.is_some() && m.ip_proto != tp_proto {
        return Err(err::BAD_PREREQ);
    }
    m.check().map_err(|_| err::BAD_PREREQ)?;
    Ok(m)
}

/// Writes one TLV (a mask only when not all ones).
pub fn write_tlv(w: &mut Writer, field: u8, v: &[u8], mask: Option<&[u8]>) {
    let mask = mask.filter(|m| m.iter().any(|&b| b != 0xff));
    let len = v.len() * if mask.is_some() { 2 } else { 1 };
    w.u16(OXM_BASIC).u8(field << 1 | u8::from(mask.is_some())).u8(len as u8).bytes(v);
    if let Some(m) = mask {
        w.bytes(m);
    }
}

/// Writes `m` as an `ofp_match`, padded to 8 bytes.
pub fn write_match(w: &mut Writer, m: &Match) {
    let start = w.len();
    w.u16(MATCH_OXM).u16(0);
    if let Some(p) = m.in_port {
        write_tlv(w, IN_PORT, &u32::from(p).to_be_bytes(), None);
    }
    if let Some((v, k)) = m.eth_dst {
        write_tlv(w, ETH_DST, &v, Some(&k));
    }
    if let Some((v, k)) = m.eth_src {
        write_tlv(w, ETH_SRC, &v, Some(&k));
    }
    if let Some(t) = m.eth_type {
        write_tlv(w, ETH_TYPE, &t.to_be_bytes(), None);
    }
    if let Some((v, k)) = m.vlan_vid {
        write_tlv(w, VLAN_VID, &v.to_be_bytes(), Some(&k.to_be_bytes()));
    }
    if let Some(p) = m.ip_proto {
        write_tlv(w, IP_PROTO, &[p], None);
    }
    if let Some((v, k)) = m.ipv4_src {
        write_tlv(w, IPV4_SRC, &v.to_be_bytes(), Some(&k.to_be_bytes()));
    }
    if let Some((v, k)) = m.ipv4_dst {
        write_tlv(w, IPV4_DST, &v.to_be_bytes(), Some(&k.to_be_bytes()));
    }
    if let Some((v, k)) = m.ipv6_src {
        write_tlv(w, IPV6_SRC, &v.to_be_bytes(), Some(&k.to_be_bytes()));
    }
    if let Some((v, k)) = m.ipv6_dst {
        write_tlv(w, IPV6_DST, &v.to_be_bytes(), Some(&k.to_be_bytes()));
    }
    let udp = m.ip_proto == Some(IPPROTO_UDP);
    if let Some(p) = m.tp_src {
        write_tlv(w, if udp { UDP_SRC } else { TCP_SRC }, &p.to_be_bytes(), None);
    }
    if let Some(p) = m.tp_dst {
        write_tlv(w, if udp { UDP_DST } else { TCP_DST }, &p.to_be_bytes(), None);
    }
    let len = w.len() - start;
    w.patch_u16(start + 2, len as u16);
    w.pad8(start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::key::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, VID_PRESENT};

    fn round_trip(m: &Match) -> Match {
        let mut w = Writer::default();
        write_match(&mut w, m);
        assert_eq!(w.len() % 8, 0);
        let mut r = Reader::new(&w.0);
        let back = read_match(&mut r).unwrap();
        assert!(r.is_empty(), "padding consumed");
        back
    }

    #[test]
    fn matches_round_trip() {
        let ms = [
            Match::default(),
            Match { in_port: Some(3), eth_dst: Some(([2, 0, 0, 0, 0, 1], [0xff; 6])), ..Match::default() },
            Match { eth_src: Some(([2, 0, 0, 0, 0, 0], [0xff, 0xff, 0, 0, 0, 0])), vlan_vid: Some((VID_PRESENT | 10, 0x1fff)), ..Match::default() },
            Match {
                eth_type: Some(ETHERTYPE_IPV4),
                ip_proto: Some(6),
                ipv4_src: Some((0x0a00_0000, 0xff00_0000)),
                ipv4_dst: Some((0x0a00_0001, u32::MAX)),
                tp_src: Some(1),
                tp_dst: Some(80),
                ..Match::default()
            },
            Match { eth_type: Some(ETHERTYPE_IPV6), ip_proto: Some(17), ipv6_dst: Some((1 << 120, !0 << 64)), tp_dst: Some(53), ..Match::default() },
        ];
        for m in &ms {
            assert_eq!(&round_trip(m), m);
        }
    }

    fn parse(tlvs: &[u8]) -> Res<Match> {
        let mut w = Writer::default();
        w.u16(MATCH_OXM).u16(4 + tlvs.len() as u16).bytes(tlvs).pad8(0);
        read_match(&mut Reader::new(&w.0))
    }

    #[test]
    fn bad_matches_are_errors() {
        let in_port = [0x80, 0, IN_PORT << 1, 4, 0, 0, 0, 1];
        assert!(parse(&in_port).is_ok());
        assert_eq!(parse(&[in_port, in_port].concat()), Err(err::DUP_FIELD));
        // A TLV longer than the match, a length that lies, an unknown field.
        assert_eq!(parse(&[0x80, 0, IN_PORT << 1, 40, 0, 0, 0, 1]), Err(err::BAD_MATCH_LEN));
        assert_eq!(parse(&[0x80, 0, IN_PORT << 1, 2, 0, 1]), Err(err::BAD_MATCH_LEN));
        assert_eq!(parse(&[0x80, 0, 40 << 1, 2, 0, 1]), Err(err::BAD_FIELD));
        assert_eq!(parse(&[0xff, 0xff, 0, 2, 0, 1]), Err(err::BAD_FIELD));
        // A masked in_port, a value outside its mask.
        assert_eq!(parse(&[0x80, 0, IN_PORT << 1 | 1, 8, 0, 0, 0, 1, 0, 0, 0, 1]), Err(err::BAD_MASK));
        assert_eq!(parse(&[0x80, 0, IPV4_SRC << 1 | 1, 8, 10, 0, 0, 1, 255, 0, 0, 0]), Err(err::BAD_VALUE));
        // Ports without the IP protocol, TCP and UDP at once.
        assert_eq!(parse(&[0x80, 0, TCP_DST << 1, 2, 0, 80]), Err(err::BAD_PREREQ));
        let eth_ip = [0x80, 0, ETH_TYPE << 1, 2, 8, 0, 0x80, 0, IP_PROTO << 1, 1, 6];
        assert!(parse(&[&eth_ip[..], &[0x80, 0, TCP_DST << 1, 2, 0, 80]].concat()).is_ok());
        assert_eq!(parse(&[&eth_ip[..], &[0x80, 0, UDP_DST << 1, 2, 0, 80]].concat()), Err(err::BAD_PREREQ));
        // Not OXM, a length under the header, a truncated header.
        assert_eq!(read_match(&mut Reader::new(&[0, 0, 0, 4, 0, 0, 0, 0])), Err(err::BAD_MATCH_TYPE));
        assert_eq!(read_match(&mut Reader::new(&[0, 1, 0, 2, 0, 0, 0, 0])), Err(err::BAD_MATCH_LEN));
        assert!(read_match(&mut Reader::new(&[0, 1])).is_err());
    }
}
