//! TCP segmentation in software, for an output that cannot take a guest's
//! TSO frame whole (a guest without GUEST_TSO*, a NIC without TSO).
//!
//! The segmenter writes each segment's headers and says which bytes of the
//! original frame its payload is: the caller moves the payload however it
//! moves bytes (one copy, guest to guest), and sums it on the way when the
//! output needs a full checksum.
use std::ops::Range;

use super::csum::{finish, ipv4_header_checksum, pseudo_v4, pseudo_v6, Checksum, IPV4_CSUM};
use super::hdr::{Gso, GsoKind};
use crate::parse::{ETH_HLEN, VLAN_HLEN};

/// The longest headers a segment repeats: a tag, 60 bytes of IPv4, 60 of TCP.
pub const MAX_HDR: usize = ETH_HLEN + VLAN_HLEN + 60 + 60;

const TCP_SEQ: usize = 4;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// Cuts one TSO frame into segments, one at a time.
#[derive(Clone, Copy, Debug)]
pub struct Segmenter {
    gso: Gso,
    /// The original headers; every index below `gso.hdr_len()` is valid.
    hdr: [u8; MAX_HDR],
    payload: usize,
    /// 0 if built from something `validate` would not have produced.
    count: usize,
}

impl Segmenter {
    /// For a frame of `frame_len` bytes whose offloads validated as `gso`;
    /// `headers` holds at least its first `gso.hdr_len()` bytes. Given
    /// anything else (a caller's bug, or a `Gso` built from outside
    /// metadata), a segmenter of no segments.
    pub fn new(gso: &Gso, headers: &[u8], frame_len: usize) -> Segmenter {
        Segmenter::try_new(gso, headers, frame_len).unwrap_or(Segmenter { gso: *gso, hdr: [0; MAX_HDR], payload: 0, count: 0 })
    }

    /// As `new`, but None where `new` gives no segments.
    pub fn try_new(gso: &Gso, headers: &[u8], frame_len: usize) -> Option<Segmenter> {
        let n = gso.hdr_len();
        let ip_min = match gso.kind {
            GsoKind::Tcp4 => 20,
            GsoKind::Tcp6 => 40,
        };
        let (l3, l4) = (usize::from(gso.l3_len), usize::from(gso.l4_len));
        let payload = frame_len.checked_sub(n)?;
        let fits = l3 + l4 + payload.min(usize::from(gso.mss)) <= usize::from(u16::MAX);
        if n > MAX_HDR || usize::from(gso.l2_len) < ETH_HLEN || l3 < ip_min || l4 < 20 || gso.mss == 0 || !fits {
            return None;
        }
        let mut hdr = [0u8; MAX_HDR];
        hdr[..n].copy_from_slice(headers.get(..n)?);
        let count = payload.div_ceil(usize::from(gso.mss)).max(1);
        Some(Segmenter { gso: *gso, hdr, payload, count })
    }

    /// How many segments: ceil(payload / mss), at least one even with no
    /// payload (0 only for a segmenter built from invalid input).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes segment `k`'s headers into `out` (its first `gso.hdr_len()`
    /// bytes) and returns the range of the original frame its payload is.
    /// With `partial_csum` the TCP checksum field holds the pseudo-header
    /// sum, for a receiver taking NEEDS_CSUM (`Gso::segment_offload`), or
    /// to finish with `complete_partial`; without, `finish_tcp` finishes it
    /// once the payload is summed. If there is no segment `k` or `out` is
    /// too short: nothing written, an empty range.
    pub fn segment(&self, k: usize, out: &mut [u8], partial_csum: bool) -> Range<usize> {
        let n = self.gso.hdr_len();
        match out.get_mut(..n) {
            Some(out) if k < self.count => self.write(k, out, partial_csum),
            _ => 0..0,
        }
    }

    /// The range of the original frame that segment `k`'s payload is
    /// (empty if there is no segment `k`).
    pub fn payload(&self, k: usize) -> Range<usize> {
        if k >= self.count {
            return 0..0;
        }
        let (n, mss) = (self.gso.hdr_len(), usize::from(self.gso.mss));
        let at = k * mss;
        n + at..n + at + mss.min(self.payload - at)
    }

    fn write(&self, k: usize, out: &mut [u8], partial_csum: bool) -> Range<usize> {
        let n = self.gso.hdr_len();
        out.copy_from_slice(&self.hdr[..n]);
        let range = self.payload(k);
        let (at, len) = (range.start - n, range.len());
        self.set_ip(out, k, len);
        let tcp = &mut out[self.l4_start()..];
        let seq = u32::from_be_bytes(bytes(tcp, TCP_SEQ));
        tcp[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&seq.wrapping_add(at as u32).to_be_bytes());
        tcp[TCP_FLAGS] &= self.flags_kept(k);
        let field = if partial_csum { self.pseudo(out, usize::from(self.gso.l4_len) + len).fold() } else { 0 };
        put16(out, self.l4_start() + TCP_CSUM, field);
        range
    }

    /// Finishes the TCP checksum of a segment whose headers `segment` wrote
    /// into `out`, given the sum of its payload. False if `out` is short.
    #[must_use]
    pub fn finish_tcp(&self, out: &mut [u8], payload: &Checksum) -> bool {
        let n = self.gso.hdr_len();
        let Some(out) = out.get_mut(..n).filter(|_| self.count > 0) else {
            return false;
        };
        let (l3_start, l4_start) = (usize::from(self.gso.l2_len), self.l4_start());
        let ip = &out[l3_start..];
        let l4_len = match self.gso.kind {
            GsoKind::Tcp4 => usize::from(be16(ip, 2)).saturating_sub(usize::from(self.gso.l3_len)),
            GsoKind::Tcp6 => usize::from(be16(ip, 4)),
        };
        out[l4_start + TCP_CSUM..][..2].fill(0);
        let mut sum = self.pseudo(out, l4_len);
        sum.add(&out[l4_start..]);
        sum.append(payload);
        finish(out, self.gso.csum(), &sum)
    }

    fn l4_start(&self) -> usize {
        usize::from(self.gso.l2_len) + usize::from(self.gso.l3_len)
    }

    /// Sets segment `k`'s IP length (for `len` bytes of payload) and, for
    /// IPv4, its id and header checksum.
    fn set_ip(&self, out: &mut [u8], k: usize, len: usize) {
        let (l2, l3, l4) = (usize::from(self.gso.l2_len), usize::from(self.gso.l3_len), usize::from(self.gso.l4_len));
        let ip = &mut out[l2..l2 + l3];
        match self.gso.kind {
            GsoKind::Tcp4 => {
                put16(ip, 2, (l3 + l4 + len) as u16);
                put16(ip, 4, be16(ip, 4).wrapping_add(k as u16));
                let c = ipv4_header_checksum(ip);
                put16(ip, IPV4_CSUM, c);
            }
            GsoKind::Tcp6 => put16(ip, 4, (l4 + len) as u16),
        }
    }

    /// FIN and PSH belong to the last segment, CWR to the first (RFC 3168
    /// 6.1.2); the other flags repeat on every segment.
    fn flags_kept(&self, k: usize) -> u8 {
        let mut keep = 0xff;
        if k + 1 < self.count {
            keep &= !(FIN | PSH);
        }
        if k > 0 {
            keep &= !CWR;
        }
        keep
    }

    /// The TCP pseudo-header sum of a segment with `l4_len` bytes of TCP.
    fn pseudo(&self, out: &[u8], l4_len: usize) -> Checksum {
        let ip = &out[usize::from(self.gso.l2_len)..];
        match self.gso.kind {
            GsoKind::Tcp4 => pseudo_v4(bytes(ip, 12), bytes(ip, 16), 6, l4_len as u16),
            GsoKind::Tcp6 => pseudo_v6(&bytes(ip, 8), &bytes(ip, 24), 6, l4_len as u32),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes(b, at))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(field) = b.get_mut(at..at + 2) {
        field.copy_from_slice(&v.to_be_bytes());
    }
}

/// `N` bytes of `b` from `at`, zeros if `b` is short (it is not: the
/// segmenter's headers were checked to be long enough).
fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at + N).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use etherparse::{NetHeaders, PacketHeaders, TcpHeader, TransportHeader};

    use super::*;
    use crate::offload::csum::complete_partial;
    use crate::offload::hdr::{Caps, GSO_ECN};
    use crate::offload::testutil::{Spec, ACK, CWR, FIN, PSH};
    use crate::offload::validate::{validate, MAX_FRAME};

    const MSS: [u16; 6] = [536, 999, 1000, 1448, 1460, 8960];

    fn gso_of(s: &Spec, mss: u16, f: &[u8]) -> Gso {
        let mut h = s.tso_hdr(mss);
        if s.tcp_flags & CWR != 0 {
            h.gso_type |= GSO_ECN;
        }
        validate(&h, &f[..f.len().min(128)], f.len(), Caps::ALL).unwrap().gso.unwrap()
    }

    /// Cuts `s`'s frame with full checksums, checking on the way that the
    /// partial mode finished by `complete_partial` gives the same bytes;
    /// returns each segment whole.
    fn cut(s: &Spec, mss: u16) -> Vec<Vec<u8>> {
        let f = s.frame();
        let g = gso_of(s, mss, &f);
        let seg = Segmenter::new(&g, &f, f.len());
        assert_eq!(seg.count(), s.payload.div_ceil(usize::from(mss)).max(1));
        let n = g.hdr_len();
        let cut_one = |k| {
            let mut full = [0u8; MAX_HDR];
            let range = seg.segment(k, &mut full, false);
            assert_eq!(seg.payload(k), range, "segment {k}'s payload, without its headers");
            let mut sum = Checksum::new();
            sum.add(&f[range.clone()]);
            assert!(seg.finish_tcp(&mut full, &sum));
            let mut partial = [0u8; MAX_HDR];
            assert_eq!(seg.segment(k, &mut partial, true), range);
            assert!(complete_partial(&mut partial[..n], g.csum(), &sum));
            assert_eq!(partial[..n], full[..n], "segment {k}: partial then completed");
            [&full[..n], &f[range]].concat()
        };
        (0..seg.count()).map(cut_one).collect()
    }

    /// Checks every segment with etherparse against the original frame.
    fn verify(s: &Spec, mss: u16, segments: &[Vec<u8>]) {
        let f = s.frame();
        let mss = usize::from(mss);
        let mut payload = Vec::new();
        for (k, seg) in segments.iter().enumerate() {
            let what = format!("{s:?} mss {mss} segment {k}");
            let p = PacketHeaders::from_ethernet_slice(seg).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(p.vlan.is_some(), s.vlan, "{what}");
            let Some(TransportHeader::Tcp(tcp)) = p.transport.clone() else { panic!("{what}: not TCP") };
            let data = p.payload.slice();
            let last = k + 1 == segments.len();
            assert_eq!(data.len(), if last { s.payload - k * mss } else { mss }, "{what}");
            let want = match &p.net {
                Some(NetHeaders::Ipv4(ip, _)) => {
                    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "{what}: IPv4 header checksum");
                    assert_eq!(ip.identification, s.ip_id.wrapping_add(k as u16), "{what}");
                    assert_eq!(usize::from(ip.total_len), seg.len() - s.l2(), "{what}");
                    tcp.calc_checksum_ipv4(ip, data).unwrap()
                }
                Some(NetHeaders::Ipv6(ip, _)) => {
                    assert_eq!(usize::from(ip.payload_length), seg.len() - s.l2() - 40, "{what}");
                    tcp.calc_checksum_ipv6(ip, data).unwrap()
                }
                other => panic!("{what}: {other:?}"),
            };
            // 0 and 0xffff are the same in ones' complement; 0 goes as 0xffff.
            assert!(tcp.checksum == want || tcp.checksum == 0xffff && want == 0, "{what}: TCP checksum {:#x}, want {want:#x}", tcp.checksum);
            assert_eq!(tcp.sequence_number, s.seq.wrapping_add((k * mss) as u32), "{what}");
            check_flags(&tcp, s.tcp_flags, k == 0, last, &what);
            assert_eq!(seg[..s.l2()], f[..s.l2()], "{what}: Ethernet header");
            assert_eq!(seg[s.l2() + 20..s.l2() + s.l3()], f[s.l2() + 20..s.l2() + s.l3()], "{what}: IP addresses and options");
            assert_eq!(seg[s.l2() + s.l3() + 20..s.hdr_len()], f[s.l2() + s.l3() + 20..s.hdr_len()], "{what}: TCP options");
            payload.extend_from_slice(data);
        }
        assert!(payload == f[s.hdr_len()..], "{s:?} mss {mss}: the payloads make up the original");
    }

    fn check_flags(tcp: &TcpHeader, orig: u8, first: bool, last: bool, what: &str) {
        let had = |flag: u8| orig & flag != 0;
        assert_eq!(tcp.fin, last && had(FIN), "{what}: FIN");
        assert_eq!(tcp.psh, last && had(PSH), "{what}: PSH");
        assert_eq!(tcp.cwr, first && had(CWR), "{what}: CWR");
        let same = [(tcp.syn, 0x02), (tcp.rst, 0x04), (tcp.ack, ACK), (tcp.urg, 0x20), (tcp.ece, 0x40)];
        for (got, flag) in same {
            assert_eq!(got, had(flag), "{what}: flag {flag:#x} as in the original");
        }
    }

    /// Payload lengths for `mss`: one byte, one segment exactly, a short
    /// odd last segment, and the largest frame.
    fn payloads(s: &Spec, mss: u16) -> [usize; 5] {
        let mss = usize::from(mss);
        let largest = if s.v6 { MAX_FRAME - s.hdr_len() } else { 65535 - s.l3() - s.l4() };
        [1, mss, 2 * mss + 1, 7 * mss - 3, largest]
    }

    fn every_mss_and_length(base: Spec) {
        for vlan in [false, true] {
            let s = Spec { vlan, ..base };
            for mss in MSS {
                for payload in payloads(&s, mss) {
                    let s = Spec { payload, ..s };
                    verify(&s, mss, &cut(&s, mss));
                }
            }
        }
    }

    #[test]
    fn ipv4_segments_check_out_with_etherparse() {
        every_mss_and_length(Spec::V4);
    }

    #[test]
    fn ipv6_segments_check_out_with_etherparse() {
        every_mss_and_length(Spec::V6);
    }

    #[test]
    fn ip_and_tcp_options_repeat_on_every_segment() {
        let s = Spec { ip_opts: 40, tcp_opts: 28, vlan: true, payload: 10_000, ..Spec::V4 };
        verify(&s, 1448, &cut(&s, 1448));
    }

    #[test]
    fn one_segment_keeps_every_flag() {
        for payload in [0, 1, 1447, 1448] {
            for base in [Spec::V4, Spec::V6] {
                let s = Spec { payload, tcp_flags: ACK | PSH | FIN | CWR | 0x40, ..base };
                let segs = cut(&s, 1448);
                assert_eq!(segs.len(), 1, "{payload} bytes");
                verify(&s, 1448, &segs);
                // The original frame, its checksum finished.
                let (f, at) = (s.frame(), s.l2() + s.l3() + 16);
                assert_eq!((&segs[0][..at], &segs[0][at + 2..]), (&f[..at], &f[at + 2..]));
            }
        }
    }

    #[test]
    fn psh_and_fin_on_the_last_segment_cwr_on_the_first() {
        for flags in [ACK | PSH | FIN | CWR | 0x40, ACK | 0x02 | 0x20, ACK | 0x04, ACK] {
            for base in [Spec::V4, Spec::V6] {
                let s = Spec { tcp_flags: flags, payload: 5000, ..base };
                let segs = cut(&s, 1448);
                assert_eq!(segs.len(), 4);
                verify(&s, 1448, &segs);
            }
        }
    }

    #[test]
    fn ip_ids_and_sequence_numbers_wrap() {
        let s = Spec { ip_id: 0xfffe, seq: 0xffff_f000, payload: 20_000, ..Spec::V4 };
        let segs = cut(&s, 1448);
        assert_eq!(segs.len(), 14);
        verify(&s, 1448, &segs);
        let id = |seg: &Vec<u8>| u16::from_be_bytes([seg[18], seg[19]]);
        assert_eq!([id(&segs[0]), id(&segs[1]), id(&segs[2])], [0xfffe, 0xffff, 0]);
        let s6 = Spec { seq: u32::MAX, ..Spec::V6 };
        verify(&s6, 536, &cut(&s6, 536));
    }

    #[test]
    fn no_segment_k_or_no_room_writes_nothing() {
        let s = Spec::V4;
        let f = s.frame();
        let seg = Segmenter::new(&gso_of(&s, 1448, &f), &f, f.len());
        let mut out = [0xaa_u8; MAX_HDR];
        assert_eq!(seg.segment(seg.count(), &mut out, false), 0..0);
        assert_eq!(seg.segment(usize::MAX, &mut out, true), 0..0);
        assert_eq!(seg.payload(seg.count()), 0..0);
        assert_eq!(seg.segment(0, &mut out[..s.hdr_len() - 1], false), 0..0);
        assert_eq!(out, [0xaa; MAX_HDR]);
        assert!(!seg.finish_tcp(&mut out[..s.hdr_len() - 1], &Checksum::new()));
    }

    #[test]
    fn input_validate_would_refuse_gives_no_segments() {
        let s = Spec::V4;
        let f = s.frame();
        let g = gso_of(&s, 1448, &f);
        let none = |g: &Gso, headers: &[u8], len: usize| {
            assert!(Segmenter::try_new(g, headers, len).is_none(), "{g:?}");
            assert_eq!(Segmenter::new(g, headers, len).count(), 0);
        };
        none(&g, &f[..s.hdr_len() - 1], f.len());
        none(&g, &f, s.hdr_len() - 1);
        none(&Gso { mss: 0, ..g }, &f, f.len());
        none(&Gso { l3_len: 19, ..g }, &f, f.len());
        none(&Gso { l4_len: 16, ..g }, &f, f.len());
        none(&Gso { kind: GsoKind::Tcp6, ..g }, &f, f.len());
        none(&Gso { l2_len: 200, ..g }, &f, f.len());
        let mut out = [0u8; MAX_HDR];
        assert_eq!(Segmenter::new(&Gso { mss: 0, ..g }, &f, f.len()).segment(0, &mut out, false), 0..0);
        assert!(!Segmenter::new(&Gso { mss: 0, ..g }, &f, f.len()).finish_tcp(&mut out, &Checksum::new()));
    }
}
