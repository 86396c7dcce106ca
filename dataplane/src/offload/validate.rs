//! Checking a guest's virtio-net header against its frame (VIRTIO 1.1
//! 5.1.6.2) before anything trusts it.
//!
//! Every field is guest-controlled, and so are the frame's bytes: the
//! checks read only the caller's private copy of the frame's first bytes,
//! and a header that passes becomes an [`Offload`] built from what the
//! switch parsed itself. The guest's `hdr_len` is ignored (a hint, says the
//! spec). The header's own fields are checked first (frame length,
//! checksum request, GSO type and its negotiation, NEEDS_CSUM, gso_size),
//! then the frame's headers, then gso_size against them; the first check
//! that fails is reported.
use super::hdr::{Caps, Csum, Gso, GsoKind, NetHdr, Offload, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
use crate::parse::{ETHERTYPE_VLAN, ETH_HLEN, VLAN_HLEN};

/// The longest frame with offloads: 64 KB of IP packet under an Ethernet
/// header with one tag (Linux's GSO limit without BIG TCP).
pub const MAX_FRAME: usize = 65536 + ETH_HLEN + VLAN_HLEN;
/// The smallest `gso_size` accepted: Linux's MSS floor (TCP_MIN_MSS, 88)
/// less 40 bytes of TCP options. A smaller one would only multiply the
/// segments (and the work) a guest can make the switch cut per frame.
pub const MIN_MSS: u16 = 48;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// IPv6 extension headers (IANA's list): TSO here takes TCP right after
/// the fixed header, as Linux sends it (a HBH jumbo header means BIG TCP).
const IPV6_EXT_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

macro_rules! errors {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Why a guest's header was refused; each one has a drop counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum HdrError { $($(#[doc = $doc])* $variant,)* }

        impl HdrError {
            pub const ALL: &'static [HdrError] = &[$(HdrError::$variant,)*];

            /// The counter's name.
            pub fn name(self) -> &'static str {
                match self { $(HdrError::$variant => $name,)* }
            }
        }
    };
}

errors! {
    /// The frame is longer than `MAX_FRAME`, or than an IPv4 total length
    /// can say.
    TooLong = "too_long",
    /// NEEDS_CSUM or a GSO type the guest did not negotiate.
    OffloadNotNegotiated = "offload_not_negotiated",
    /// The checksum field is not inside the frame's first bytes (the
    /// private copy), or the sum starts inside the Ethernet header.
    CsumOutOfFrame = "csum_out_of_frame",
    /// UDP (UFO is not offered) or a value the spec does not define.
    UnknownGsoType = "unknown_gso_type",
    /// The ECN bit without HOST_ECN.
    EcnNotNegotiated = "ecn_not_negotiated",
    /// GSO without NEEDS_CSUM (the spec's driver MUST).
    MissingCsum = "missing_csum",
    /// GSO with `gso_size` 0.
    GsoSizeZero = "gso_size_zero",
    /// GSO with `gso_size` below `MIN_MSS`.
    GsoSizeTooSmall = "gso_size_too_small",
    /// The frame is not the TCP over the IP version its GSO type says.
    GsoNotTcp = "gso_not_tcp",
    /// Headers truncated or malformed, an IPv4 fragment, IPv6 extension
    /// headers, IP length not the frame's, or NEEDS_CSUM not designating
    /// the TCP checksum.
    BadHeaders = "bad_headers",
    /// A full segment would not fit in an IP packet.
    GsoSizeTooLarge = "gso_size_too_large",
}

/// Checks the guest's header `h` against its frame: `head` is at least the
/// first min(frame_len, 128) bytes (a private copy: it must not change
/// under the checks), `frame_len` the whole frame's length, `caps` what the
/// guest negotiated for transmission.
#[inline]
pub fn validate(h: &NetHdr, head: &[u8], frame_len: usize, caps: Caps) -> Result<Offload, HdrError> {
    // Unknown flag bits, DATA_VALID among them, are ignored (5.1.6.2.2).
    if h.flags & NEEDS_CSUM == 0 && h.gso_type == GSO_NONE {
        return Ok(Offload::NONE);
    }
    validate_offloads(h, head, frame_len, caps)
}

fn validate_offloads(h: &NetHdr, head: &[u8], frame_len: usize, caps: Caps) -> Result<Offload, HdrError> {
    if frame_len > MAX_FRAME {
        return Err(HdrError::TooLong);
    }
    let head = head.get(..frame_len).unwrap_or(head);
    let csum = match h.flags & NEEDS_CSUM {
        0 => None,
        _ => Some(check_csum(h, head, caps)?),
    };
    if h.gso_type == GSO_NONE {
        return Ok(Offload { csum, gso: None });
    }
    let (kind, ecn) = gso_kind(h.gso_type, caps)?;
    let csum = csum.ok_or(HdrError::MissingCsum)?;
    match h.gso_size {
        0 => return Err(HdrError::GsoSizeZero),
        s if s < MIN_MSS => return Err(HdrError::GsoSizeTooSmall),
        _ => {}
    }
    let gso = parse_tcp(kind, ecn, h.gso_size, head, frame_len)?;
    if csum != gso.csum() {
        return Err(HdrError::BadHeaders);
    }
    if usize::from(gso.mss) + usize::from(gso.l3_len) + usize::from(gso.l4_len) > usize::from(u16::MAX) {
        return Err(HdrError::GsoSizeTooLarge);
    }
    Ok(Offload { csum: Some(csum), gso: Some(gso) })
}

fn check_csum(h: &NetHdr, head: &[u8], caps: Caps) -> Result<Csum, HdrError> {
    if !caps.csum {
        return Err(HdrError::OffloadNotNegotiated);
    }
    let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
    if usize::from(h.csum_start) < ETH_HLEN || end > head.len() {
        return Err(HdrError::CsumOutOfFrame);
    }
    Ok(Csum { start: h.csum_start, offset: h.csum_offset })
}

fn gso_kind(gso_type: u8, caps: Caps) -> Result<(GsoKind, bool), HdrError> {
    let (kind, negotiated) = match gso_type & !GSO_ECN {
        GSO_TCPV4 => (GsoKind::Tcp4, caps.tso4),
        GSO_TCPV6 => (GsoKind::Tcp6, caps.tso6),
        _ => return Err(HdrError::UnknownGsoType),
    };
    let ecn = gso_type & GSO_ECN != 0;
    if !negotiated {
        return Err(HdrError::OffloadNotNegotiated);
    }
    if ecn && !caps.ecn {
        return Err(HdrError::EcnNotNegotiated);
    }
    Ok((kind, ecn))
}

/// The frame's own headers: Ethernet (one 802.1Q tag at most), IP of
/// `kind`, TCP, all inside `head`, the IP length the frame's.
fn parse_tcp(kind: GsoKind, ecn: bool, mss: u16, head: &[u8], frame_len: usize) -> Result<Gso, HdrError> {
    let (l2, ethertype) = ethernet(head)?;
    let ip = head.get(l2..).ok_or(HdrError::BadHeaders)?;
    let ip_len = frame_len.saturating_sub(l2);
    let l3 = match kind {
        GsoKind::Tcp4 if ethertype == ETHERTYPE_IPV4 => ipv4(ip, ip_len)?,
        GsoKind::Tcp6 if ethertype == ETHERTYPE_IPV6 => ipv6(ip, ip_len)?,
        _ => return Err(HdrError::GsoNotTcp),
    };
    let l4 = tcp(ip.get(l3..).ok_or(HdrError::BadHeaders)?)?;
    let narrow = |n: usize| u8::try_from(n).map_err(|_| HdrError::BadHeaders);
    Ok(Gso { kind, ecn, mss, l2_len: narrow(l2)?, l3_len: narrow(l3)?, l4_len: narrow(l4)? })
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The L2 header's length and the EtherType after it.
fn ethernet(head: &[u8]) -> Result<(usize, u16), HdrError> {
    match be16(head, ETH_HLEN - 2).ok_or(HdrError::BadHeaders)? {
        ETHERTYPE_VLAN => Ok((ETH_HLEN + VLAN_HLEN, be16(head, ETH_HLEN + 2).ok_or(HdrError::BadHeaders)?)),
        t => Ok((ETH_HLEN, t)),
    }
}

/// The IPv4 header's length (options included).
fn ipv4(ip: &[u8], ip_len: usize) -> Result<usize, HdrError> {
    let (&vihl, &proto) = (ip.first().ok_or(HdrError::BadHeaders)?, ip.get(9).ok_or(HdrError::BadHeaders)?);
    let l3 = usize::from(vihl & 0xf) * 4;
    if vihl >> 4 != 4 || l3 < 20 || l3 > ip.len() {
        return Err(HdrError::BadHeaders);
    }
    if proto != IPPROTO_TCP {
        return Err(HdrError::GsoNotTcp);
    }
    let (tot_len, frag) = (be16(ip, 2).unwrap_or(0), be16(ip, 6).unwrap_or(0));
    // A fragment is not a TCP segment to cut: MF set or an offset.
    if frag & 0x3fff != 0 {
        return Err(HdrError::BadHeaders);
    }
    if ip_len > usize::from(u16::MAX) {
        return Err(HdrError::TooLong);
    }
    if usize::from(tot_len) != ip_len {
        return Err(HdrError::BadHeaders);
    }
    Ok(l3)
}

/// The IPv6 header's length: 40, as extension headers are refused.
fn ipv6(ip: &[u8], ip_len: usize) -> Result<usize, HdrError> {
    const L3: usize = 40;
    if ip.len() < L3 || ip[0] >> 4 != 6 {
        return Err(HdrError::BadHeaders);
    }
    match ip[6] {
        IPPROTO_TCP => {}
        nh if IPV6_EXT_HEADERS.contains(&nh) => return Err(HdrError::BadHeaders),
        _ => return Err(HdrError::GsoNotTcp),
    }
    let payload_len = be16(ip, 4).unwrap_or(0);
    if usize::from(payload_len) + L3 != ip_len {
        return Err(HdrError::BadHeaders);
    }
    Ok(L3)
}

/// The TCP header's length (options included).
fn tcp(l4: &[u8]) -> Result<usize, HdrError> {
    let len = usize::from(l4.get(12).ok_or(HdrError::BadHeaders)? >> 4) * 4;
    if len < 20 || len > l4.len() {
        return Err(HdrError::BadHeaders);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::hdr::{DATA_VALID, GSO_UDP, TCP_CSUM_OFFSET};
    use crate::offload::seg::Segmenter;
    use crate::offload::testutil::{Rng, Spec};

    const HEAD: usize = 128;

    fn check(h: &NetHdr, frame: &[u8], caps: Caps) -> Result<Offload, HdrError> {
        validate(h, &frame[..frame.len().min(HEAD)], frame.len(), caps)
    }

    fn tso(s: &Spec, mss: u16) -> Result<Offload, HdrError> {
        check(&s.tso_hdr(mss), &s.frame(), Caps::ALL)
    }

    fn expect_gso(s: &Spec, mss: u16) -> Gso {
        let o = tso(s, mss).unwrap_or_else(|e| panic!("{s:?}: {e:?}"));
        let g = o.gso.unwrap();
        assert_eq!(o.csum, Some(g.csum()));
        assert_eq!((g.mss, g.hdr_len()), (mss, s.hdr_len()));
        assert_eq!((usize::from(g.l2_len), usize::from(g.l3_len), usize::from(g.l4_len)), (s.l2(), s.l3(), s.l4()));
        g
    }

    /// A UDP/IPv4 frame asking only for its checksum, as Linux sends one.
    fn udp_frame() -> (NetHdr, Vec<u8>) {
        let mut f = Spec::V4.frame();
        f[23] = 17;
        f.truncate(14 + 20 + 8 + 100);
        (NetHdr { flags: NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..NetHdr::default() }, f)
    }

    #[test]
    fn no_offload_is_the_fast_path() {
        let h = NetHdr { flags: DATA_VALID | 0xf0, hdr_len: 999, gso_size: 7, csum_start: 1, ..NetHdr::default() };
        assert_eq!(check(&h, &[], Caps::NONE), Ok(Offload::NONE), "no bytes read, other fields ignored");
        assert_eq!(check(&NetHdr::default(), &[0; 60], Caps::ALL), Ok(Offload::NONE));
        assert_eq!(validate(&NetHdr::default(), &[], 1 << 20, Caps::NONE), Ok(Offload::NONE), "lengths are the caller's");
    }

    #[test]
    fn well_formed_tso_frames() {
        for s in [Spec::V4, Spec::V6] {
            for vlan in [false, true] {
                let s = Spec { vlan, ..s };
                let g = expect_gso(&s, 1448);
                assert_eq!(g.kind, if s.v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 });
                assert!(!g.ecn);
            }
        }
        let opts = Spec { ip_opts: 40, tcp_opts: 28, vlan: true, ..Spec::V4 };
        assert_eq!(expect_gso(&opts, 536).hdr_len(), 18 + 60 + 48);
        let longest = Spec { tcp_opts: 40, ..opts };
        let (h, f) = (longest.tso_hdr(536), longest.frame());
        assert_eq!(validate(&h, &f[..HEAD], f.len(), Caps::ALL), Err(HdrError::BadHeaders), "headers past the head");
        assert_eq!(validate(&h, &f[..200], f.len(), Caps::ALL).unwrap().gso.unwrap().hdr_len(), 18 + 60 + 60);
        let bare = Spec { tcp_opts: 0, payload: 0, ..Spec::V6 };
        expect_gso(&bare, 1440);
        let ecn = Spec::V4.tso_hdr(1448);
        let o = check(&NetHdr { gso_type: GSO_TCPV4 | GSO_ECN, ..ecn }, &Spec::V4.frame(), Caps::ALL).unwrap();
        assert!(o.gso.unwrap().ecn);
    }

    #[test]
    fn the_guests_hdr_len_and_unknown_flags_are_ignored() {
        let s = Spec::V4;
        let h = NetHdr { hdr_len: 3, flags: NEEDS_CSUM | DATA_VALID | 0x40, ..s.tso_hdr(1448) };
        assert_eq!(check(&h, &s.frame(), Caps::ALL), tso(&s, 1448));
    }

    #[test]
    fn one_segment_frames_are_accepted() {
        let s = Spec { payload: 1000, ..Spec::V4 };
        assert_eq!(Segmenter::new(&expect_gso(&s, 1448), &s.frame(), s.frame_len()).count(), 1);
        let s = Spec { payload: 1448, ..Spec::V6 };
        assert_eq!(Segmenter::new(&expect_gso(&s, 1448), &s.frame(), s.frame_len()).count(), 1);
    }

    #[test]
    fn checksum_only_frames() {
        let s = Spec::V4;
        let f = s.frame();
        let h = NetHdr { gso_type: GSO_NONE, gso_size: 0, ..s.tso_hdr(0) };
        let want = Offload { csum: Some(Csum { start: 34, offset: TCP_CSUM_OFFSET }), gso: None };
        assert_eq!(check(&h, &f, Caps { csum: true, ..Caps::NONE }), Ok(want));
        let (h, f) = udp_frame();
        assert_eq!(check(&h, &f, Caps::ALL), Ok(Offload { csum: Some(Csum { start: 34, offset: 6 }), gso: None }));
        let mut padded = f[..14 + 20 + 8 + 10].to_vec();
        padded.resize(60, 0);
        assert!(check(&h, &padded, Caps::ALL).is_ok(), "Ethernet padding is not looked at");
    }

    #[test]
    fn offloads_not_negotiated() {
        let s = Spec::V4;
        let f = s.frame();
        let csum_only = NetHdr { gso_type: GSO_NONE, ..s.tso_hdr(0) };
        assert_eq!(check(&csum_only, &f, Caps::NONE), Err(HdrError::OffloadNotNegotiated));
        let no_tso4 = Caps { tso4: false, ..Caps::ALL };
        assert_eq!(check(&s.tso_hdr(1448), &f, no_tso4), Err(HdrError::OffloadNotNegotiated));
        let s6 = Spec::V6;
        assert_eq!(check(&s6.tso_hdr(1448), &s6.frame(), Caps { tso6: false, ..Caps::ALL }), Err(HdrError::OffloadNotNegotiated));
        let ecn = NetHdr { gso_type: GSO_TCPV4 | GSO_ECN, ..s.tso_hdr(1448) };
        assert_eq!(check(&ecn, &f, Caps { ecn: false, ..Caps::ALL }), Err(HdrError::EcnNotNegotiated));
    }

    #[test]
    fn unknown_gso_types() {
        let s = Spec::V4;
        for t in [GSO_UDP, GSO_UDP | GSO_ECN, GSO_ECN, 2, 5, 0x7f, 0xff] {
            let h = NetHdr { gso_type: t, ..s.tso_hdr(1448) };
            assert_eq!(check(&h, &s.frame(), Caps::ALL), Err(HdrError::UnknownGsoType), "gso_type {t:#x}");
        }
    }

    #[test]
    fn gso_needs_a_checksum_request() {
        let s = Spec::V4;
        let h = NetHdr { flags: DATA_VALID, ..s.tso_hdr(1448) };
        assert_eq!(check(&h, &s.frame(), Caps::ALL), Err(HdrError::MissingCsum));
    }

    #[test]
    fn checksum_outside_the_frame_or_head() {
        let (h, f) = udp_frame();
        let at = |csum_start, csum_offset| NetHdr { csum_start, csum_offset, ..h };
        let err = Err(HdrError::CsumOutOfFrame);
        assert_eq!(check(&at(13, 6), &f, Caps::ALL), err, "starts in the Ethernet header");
        assert!(check(&at(14, 0), &f, Caps::ALL).is_ok());
        assert_eq!(check(&at(126, 1), &f, Caps::ALL), err, "past the 128 bytes of head");
        assert!(check(&at(126, 0), &f, Caps::ALL).is_ok(), "the last 2 bytes of head");
        let short = &f[..60];
        assert_eq!(check(&at(34, 25), short, Caps::ALL), err, "past the frame's end");
        assert!(check(&at(34, 24), short, Caps::ALL).is_ok());
        assert_eq!(validate(&at(34, 6), &f[..40], f.len(), Caps::ALL), err, "past a short head");
        assert_eq!(check(&at(u16::MAX, u16::MAX), &f, Caps::ALL), err);
        let long = vec![0u8; 200];
        assert_eq!(validate(&at(14, 110), &long, 41, Caps::ALL), err, "a head longer than the frame counts as the frame");
    }

    #[test]
    fn gso_sizes() {
        let s = Spec::V4;
        assert_eq!(tso(&s, 0), Err(HdrError::GsoSizeZero));
        assert_eq!(tso(&s, MIN_MSS - 1), Err(HdrError::GsoSizeTooSmall));
        assert!(tso(&s, MIN_MSS).is_ok());
        let max = u16::MAX - (s.l3() + s.l4()) as u16;
        assert!(tso(&s, max).is_ok(), "one segment as big as IP allows");
        assert_eq!(tso(&s, max + 1), Err(HdrError::GsoSizeTooLarge));
        assert_eq!(tso(&s, u16::MAX), Err(HdrError::GsoSizeTooLarge));
    }

    #[test]
    fn too_long_frames() {
        let s = Spec::V4;
        let h = s.tso_hdr(1448);
        let f = s.frame();
        assert_eq!(validate(&h, &f[..HEAD], MAX_FRAME + 1, Caps::ALL), Err(HdrError::TooLong));
        let csum_only = NetHdr { gso_type: GSO_NONE, ..h };
        assert_eq!(validate(&csum_only, &f[..HEAD], MAX_FRAME + 1, Caps::ALL), Err(HdrError::TooLong));
        // Untagged, 65536 bytes of IPv4: no total length can say so.
        assert_eq!(validate(&h, &f[..HEAD], 14 + 65536, Caps::ALL), Err(HdrError::TooLong));
        let biggest = Spec { payload: 65535 - 20 - s.l4(), ..s };
        expect_gso(&biggest, 1448);
        let biggest6 = Spec { payload: MAX_FRAME - Spec::V6.hdr_len(), ..Spec::V6 };
        expect_gso(&biggest6, 1448);
    }

    #[test]
    fn gso_on_frames_not_tcp_of_its_ip_version() {
        let err = Err(HdrError::GsoNotTcp);
        let (v4, v6) = (Spec::V4, Spec::V6);
        let h6_on_v4 = NetHdr { gso_type: GSO_TCPV6, ..v4.tso_hdr(1448) };
        assert_eq!(check(&h6_on_v4, &v4.frame(), Caps::ALL), err);
        let h4_on_v6 = NetHdr { gso_type: GSO_TCPV4, ..v6.tso_hdr(1448) };
        assert_eq!(check(&h4_on_v6, &v6.frame(), Caps::ALL), err);
        let mut udp = v4.frame();
        udp[23] = 17;
        assert_eq!(check(&v4.tso_hdr(1448), &udp, Caps::ALL), err);
        let mut udp6 = v6.frame();
        udp6[20] = 17;
        assert_eq!(check(&v6.tso_hdr(1448), &udp6, Caps::ALL), err);
        let mut arp = v4.frame();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(check(&v4.tso_hdr(1448), &arp, Caps::ALL), err);
        let tagged = Spec { vlan: true, ..v4 };
        let mut qinq = tagged.frame();
        qinq[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(check(&tagged.tso_hdr(1448), &qinq, Caps::ALL), err, "one tag at most");
    }

    /// Mutates one TSO frame's header bytes; expects BadHeaders.
    fn bad(s: Spec, what: &str, edit: impl Fn(&mut Vec<u8>)) {
        let mut f = s.frame();
        edit(&mut f);
        assert_eq!(check(&s.tso_hdr(1448), &f, Caps::ALL), Err(HdrError::BadHeaders), "{what}");
    }

    #[test]
    fn malformed_headers() {
        let (v4, v6) = (Spec::V4, Spec::V6);
        bad(v4, "IPv4 version 6", |f| f[14] = 0x65);
        bad(v4, "IHL 4", |f| f[14] = 0x44);
        bad(v4, "more fragments", |f| f[20] |= 0x20);
        bad(v4, "a fragment offset", |f| f[21] = 1);
        bad(v4, "total length short", |f| f[17] -= 1);
        bad(v4, "total length long", |f| f[17] += 1);
        bad(v4, "TCP data offset 4", |f| f[14 + 20 + 12] = 0x40);
        bad(v6, "IPv6 version 4", |f| f[14] = 0x40);
        bad(v6, "payload length", |f| f[19] ^= 1);
        bad(v6, "payload length 0 (a jumbogram)", |f| f[18..20].fill(0));
        for ext in [0, 43, 44, 60] {
            bad(v6, "an extension header", |f| f[20] = ext);
        }
        // The checksum request must be the TCP checksum's.
        for (start, offset) in [(33, 16), (35, 16), (34, 6), (34, 17)] {
            let f = v4.frame();
            let h = NetHdr { csum_start: start, csum_offset: offset, ..v4.tso_hdr(1448) };
            assert_eq!(check(&h, &f, Caps::ALL), Err(HdrError::BadHeaders), "csum {start}+{offset}");
        }
        // Padding a TSO frame: its IP length is no longer the frame's.
        let mut padded = Spec { payload: 1, ..v4 }.frame();
        padded.resize(80, 0);
        assert_eq!(check(&Spec { payload: 1, ..v4 }.tso_hdr(1448), &padded, Caps::ALL), Err(HdrError::BadHeaders));
    }

    #[test]
    fn headers_cut_short() {
        for s in [Spec::V4, Spec::V6, Spec { vlan: true, ip_opts: 40, tcp_opts: 40, ..Spec::V4 }] {
            let f = s.frame();
            let h = s.tso_hdr(1448);
            let need = s.hdr_len().min(HEAD);
            for n in 0..need {
                let r = validate(&h, &f[..n], f.len(), Caps::ALL);
                assert!(matches!(r, Err(HdrError::BadHeaders | HdrError::CsumOutOfFrame)), "{n}-byte head: {r:?}");
            }
            let r = validate(&h, &f[..HEAD], f.len(), Caps::ALL);
            assert_eq!(r.is_ok(), s.hdr_len() <= HEAD, "{s:?}");
        }
        let s = Spec { tcp_opts: 0, payload: 0, ..Spec::V4 };
        let f = s.frame();
        assert_eq!(validate(&s.tso_hdr(1448), &f[..f.len() - 1], f.len() - 1, Caps::ALL), Err(HdrError::BadHeaders));
    }

    #[test]
    fn validated_offloads_validate_again_from_their_header() {
        for s in [Spec::V4, Spec { vlan: true, ..Spec::V6 }] {
            let f = s.frame();
            let o = check(&s.tso_hdr(1448), &f, Caps::ALL).unwrap();
            assert_eq!(check(&o.to_hdr(), &f, Caps::ALL), Ok(o));
        }
    }

    #[test]
    fn hostile_headers_and_frames_never_panic() {
        let mut rng = Rng(0x0ff1_0ad5);
        let mut accepted = 0;
        for round in 0..200_000 {
            let mut s = if rng.below(2) == 0 { Spec::V4 } else { Spec::V6 };
            s.vlan = rng.below(2) == 0;
            s.payload = rng.below(if round % 16 == 0 { 65000 } else { 3000 });
            let mut f = s.frame();
            for _ in 0..rng.below(4) {
                let i = rng.below(f.len().min(HEAD));
                f[i] = rng.next() as u8;
            }
            let mut h = s.tso_hdr(rng.below(3000) as u16);
            for _ in 0..rng.below(3) {
                match rng.below(6) {
                    0 => h.flags = rng.next() as u8,
                    1 => h.gso_type = [0, 1, 3, 4, 0x81, 0x84, rng.next() as u8][rng.below(7)],
                    2 => h.gso_size = rng.next() as u16,
                    3 => h.csum_start = rng.below(140) as u16,
                    4 => h.csum_offset = rng.below(40) as u16,
                    _ => h.hdr_len = rng.next() as u16,
                }
            }
            let frame_len = match rng.below(8) {
                0 => rng.below(MAX_FRAME + 100),
                _ => f.len(),
            };
            let head = &f[..rng.below(HEAD + 1).min(f.len())];
            let caps = Caps { csum: rng.below(8) != 0, tso4: rng.below(4) != 0, tso6: rng.below(4) != 0, ecn: rng.below(2) == 0 };
            if let Ok(o) = validate(&h, head, frame_len, caps) {
                accepted += 1;
                exercise(&o, head, frame_len);
            }
        }
        assert!(accepted > 10_000, "the loop must reach the deep checks: {accepted}");
    }

    /// Everything downstream of a validated offload, on hostile input.
    fn exercise(o: &Offload, head: &[u8], frame_len: usize) {
        let _ = (o.fits(Caps::NONE), o.to_hdr(), o.shifted(4), o.shifted(-4));
        let Some(g) = o.gso else { return };
        let seg = Segmenter::new(&g, head, frame_len);
        assert!(seg.count() >= 1);
        let mut out = [0u8; 256];
        let mut next = g.hdr_len();
        for k in 0..seg.count() {
            let r = seg.segment(k, &mut out, k % 2 == 0);
            assert_eq!(r.start, next, "segments are contiguous");
            assert!(r.end <= frame_len && r.len() <= usize::from(g.mss));
            next = r.end;
        }
        assert_eq!(next, frame_len);
    }
}
