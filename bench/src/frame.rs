//! Benchmark frames: Ethernet/IPv4/UDP templates built once per flow, with
//! an 18-byte trailer written per packet (sequence number, TSC timestamp,
//! stream id) that fits even a 64-byte frame.
//!
//! Sizes follow RFC 2544: a "64-byte frame" counts the 4-byte FCS the NIC
//! would add, so the mbuf holds size - 4 bytes.
//!
//! The TSO scenario sends Ethernet/IPv4/TCP segments of up to 64 KB instead,
//! which a switch may deliver whole or cut into MSS-sized frames: what
//! identifies their bytes must survive the cut, so it lives in the TCP
//! header, which every cut frame repeats: the stream in the source port,
//! the byte offset in the sequence number, a TSC stamp in the ACK number.
pub const FCS: usize = 4;
pub const HEADERS: usize = 14 + 20 + 8;
pub const TRAILER: usize = 18;
/// UDP destination port that marks a benchmark frame.
pub const BENCH_PORT: u16 = 0x5657;
pub const MIN_SIZE: usize = 64;

/// A flow's MAC: VM `vm`, flow `flow` (locally administered, unicast).
pub fn flow_mac(vm: u8, flow: u32) -> [u8; 6] {
    let f = flow.to_be_bytes();
    [0x02, 0x56, vm, f[1], f[2], f[3]]
}

fn flow_ip(vm: u8, flow: u32) -> [u8; 4] {
    let f = flow.to_be_bytes();
    [10 + vm, f[1], f[2], f[3]]
}

/// The bytes of one flow's frame of `size` (FCS included), trailer zeroed.
pub fn template(src_vm: u8, dst_vm: u8, flow: u32, size: usize) -> Vec<u8> {
    let len = size.max(MIN_SIZE) - FCS;
    let mut f = Vec::with_capacity(len);
    let ip_len = (len - 14) as u16;
    eth_ipv4(&mut f, src_vm, dst_vm, flow, ip_len, 17);
    let udp_len = ip_len - 20;
    f.extend_from_slice(&(1024 + (flow % 60000) as u16).to_be_bytes());
    f.extend_from_slice(&BENCH_PORT.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(len, 0);
    f
}

/// A broadcast that announces a flow's source MAC (the learning phase).
pub fn announce(src_vm: u8, flow: u32) -> Vec<u8> {
    let mut f = template(src_vm, 0, flow, MIN_SIZE);
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[36..38].copy_from_slice(&0u16.to_be_bytes()); // not a benchmark frame
    f
}

/// Appends a flow's Ethernet header and IPv4 header (protocol `proto`,
/// `ip_len` bytes; DF for TCP, as TCP sends) to `f`; returns the IPv4 header.
fn eth_ipv4(f: &mut Vec<u8>, src_vm: u8, dst_vm: u8, flow: u32, ip_len: u16, proto: u8) -> [u8; 20] {
    f.extend_from_slice(&flow_mac(dst_vm, flow));
    f.extend_from_slice(&flow_mac(src_vm, flow));
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    if proto == 6 {
        ip[6] = 0x40;
    }
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&flow_ip(src_vm, flow));
    ip[16..20].copy_from_slice(&flow_ip(dst_vm, flow));
    let csum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    ip
}

fn ip_checksum(h: &[u8; 20]) -> u16 {
    !fold(sum16(h))
}

/// Writes the trailer into the last 18 bytes of a frame.
#[inline(always)]
pub fn stamp(frame_tail: &mut [u8], seq: u64, tsc: u64, stream: u16) {
    let t = frame_tail.len() - TRAILER;
    frame_tail[t..t + 8].copy_from_slice(&seq.to_le_bytes());
    frame_tail[t + 8..t + 16].copy_from_slice(&tsc.to_le_bytes());
    frame_tail[t + 16..t + 18].copy_from_slice(&stream.to_le_bytes());
}

/// Reads the trailer of a benchmark frame (None for anything else).
#[inline(always)]
pub fn read(frame: &[u8]) -> Option<(u64, u64, u16)> {
    let t = frame.len().checked_sub(TRAILER)?;
    read_split(frame, frame.len(), frame[t..].try_into().ok()?)
}

/// `read` for a frame of `len` bytes held in pieces: `head` its first
/// piece (the headers), `tail` its last `TRAILER` bytes.
#[inline(always)]
pub fn read_split(head: &[u8], len: usize, tail: &[u8; TRAILER]) -> Option<(u64, u64, u16)> {
    if len < HEADERS + TRAILER || head.get(36..38)? != BENCH_PORT.to_be_bytes() {
        return None;
    }
    let seq = u64::from_le_bytes(tail[0..8].try_into().ok()?);
    let tsc = u64::from_le_bytes(tail[8..16].try_into().ok()?);
    let stream = u16::from_le_bytes(tail[16..18].try_into().ok()?);
    Some((seq, tsc, stream))
}

/// The last `TRAILER` bytes of a frame of `len` bytes held in `pieces`
/// (a jumbo frame received into 2 KB buffers), gathered without copying
/// the rest; zeroes where the pieces fall short.
#[inline]
pub fn tail<'a>(len: usize, pieces: impl Iterator<Item = &'a [u8]>) -> [u8; TRAILER] {
    let mut out = [0u8; TRAILER];
    let Some(start) = len.checked_sub(TRAILER) else { return out };
    let mut off = 0;
    for p in pieces {
        let end = (off + p.len()).min(len);
        if end > start {
            let from = start.max(off);
            out[from - start..end - start].copy_from_slice(&p[from - off..end - off]);
        }
        off += p.len();
    }
    out
}

/// TCP destination port that marks a benchmark TCP segment.
pub const BENCH_TCP_PORT: u16 = 0x5658;
/// Ethernet, IPv4 and TCP headers (no options) of a TSO segment.
pub const TCP_HEADERS: usize = 14 + 20 + 20;
/// The TSO scenario's MSS (a 1500-byte MTU less IPv4 and TCP headers with
/// the 12 bytes of timestamp option Linux would send).
pub const TSO_MSS: u16 = 1448;
/// TCP payload of one TSO segment: 45 full MSS, as Linux fills 64 KB.
pub const TSO_PAYLOAD: usize = 45 * TSO_MSS as usize;
/// The ACK number carries the TSC shifted by this much: 16-cycle steps,
/// wrapping after 2^36 cycles (tens of seconds).
const STAMP_SHIFT: u32 = 4;

/// A TSO segment of stream `stream` from VM `src_vm`'s flow `flow` to
/// `dst_vm`'s, with `payload` bytes of TCP payload: valid Ethernet/IPv4
/// headers (IPv4 total length = frame length - 14, header checksum set)
/// and a TCP header whose checksum field holds the pseudo-header sum (not
/// inverted, TCP length included), as a virtio driver leaves it for the
/// device to finish (DPDK's virtio_tso_fix_cksum, Linux's CHECKSUM_PARTIAL).
/// Sequence and ACK numbers are zero: `tcp_stamp` writes them per segment.
pub fn tcp_template(src_vm: u8, dst_vm: u8, flow: u32, stream: u16, payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(TCP_HEADERS + payload);
    f.extend_from_slice(&tcp_headers(src_vm, dst_vm, flow, stream, payload));
    // A payload that is not all zeroes, so that checksums are not trivial.
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

/// The headers of `tcp_template`'s segment alone.
pub fn tcp_headers(src_vm: u8, dst_vm: u8, flow: u32, stream: u16, payload: usize) -> [u8; TCP_HEADERS] {
    let len = TCP_HEADERS + payload;
    assert!(len - 14 <= u16::MAX as usize, "an IPv4 packet holds at most 65535 bytes");
    let mut f = Vec::with_capacity(TCP_HEADERS);
    let ip = eth_ipv4(&mut f, src_vm, dst_vm, flow, (len - 14) as u16, 6);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&(1024 + stream).to_be_bytes());
    tcp[2..4].copy_from_slice(&BENCH_TCP_PORT.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH, ACK
    tcp[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    let tcp_len = (20 + payload) as u32;
    let pseudo = sum16(&ip[12..20]) + 6 + tcp_len;
    tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
    f.extend_from_slice(&tcp);
    f.try_into().expect("54 bytes of headers")
}

/// Writes a segment's sequence number (its first byte's offset in the
/// stream, modulo 2^32) and the TSC stamp (in the ACK number).
#[inline(always)]
pub fn tcp_stamp(frame: &mut [u8], seq: u32, tsc: u64) {
    frame[38..42].copy_from_slice(&seq.to_be_bytes());
    frame[42..46].copy_from_slice(&((tsc >> STAMP_SHIFT) as u32).to_be_bytes());
}

/// What the sink reads from a benchmark TCP frame: a whole segment or a
/// piece of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPiece {
    pub stream: u16,
    pub seq: u32,
    pub stamp: u32,
    /// TCP payload bytes, from the IP total length.
    pub len: u32,
}

/// Reads the headers of a benchmark TCP frame (None for anything else);
/// `head` is the first segment's data, which holds every header.
#[inline]
pub fn read_tcp(head: &[u8]) -> Option<TcpPiece> {
    if head.len() < TCP_HEADERS || head[12..14] != [0x08, 0x00] || head[23] != 6 {
        return None;
    }
    let ihl = usize::from(head[14] & 0x0f) * 4;
    let tcp = head.get(14 + ihl..14 + ihl + 20)?;
    if tcp[2..4] != BENCH_TCP_PORT.to_be_bytes() {
        return None;
    }
    let ip_len = u16::from_be_bytes([head[16], head[17]]) as usize;
    let doff = usize::from(tcp[12] >> 4) * 4;
    let len = ip_len.checked_sub(ihl + doff)?;
    Some(TcpPiece {
        stream: u16::from_be_bytes([tcp[0], tcp[1]]).wrapping_sub(1024),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        stamp: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        len: len as u32,
    })
}

/// Cycles from a stamp written by `tcp_stamp` to `now_tsc` (correct while
/// under 2^36 cycles).
#[inline(always)]
pub fn stamp_age(stamp: u32, now_tsc: u64) -> u64 {
    u64::from(((now_tsc >> STAMP_SHIFT) as u32).wrapping_sub(stamp)) << STAMP_SHIFT
}

pub(crate) fn sum16(b: &[u8]) -> u32 {
    b.chunks(2).map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32).sum()
}

pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A pcap file (microsecond stamps, Ethernet) holding `frames`.
pub fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    // Magic, version 2.4, zone, accuracy, snap length, link type.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0]);
    for w in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for f in frames {
        let len = f.len() as u32;
        for w in [0, 0, len, len] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

/// IMIX (7:4:1 of 64, 570 and 1518 bytes), as the sizes of a 12-frame cycle.
pub const IMIX: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 570, 570, 570, 570, 1518];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_have_the_asked_size_and_a_valid_ip_header() {
        for size in [64, 512, 1518, 9000] {
            let f = template(1, 2, 7, size);
            assert_eq!(f.len(), size - FCS);
            let ip: [u8; 20] = f[14..34].try_into().unwrap();
            assert_eq!(ip_checksum(&ip), 0, "a valid checksum sums to zero");
            assert_eq!(f[0..6], flow_mac(2, 7));
            assert_eq!(f[6..12], flow_mac(1, 7));
        }
    }

    #[test]
    fn trailer_round_trip_even_in_64_bytes() {
        let mut f = template(1, 2, 3, 64);
        stamp(&mut f, 42, 123_456, 9);
        assert_eq!(read(&f), Some((42, 123_456, 9)));
        assert_eq!(read(&announce(1, 3)), None);
    }

    #[test]
    fn trailer_of_a_jumbo_frame_in_pieces() {
        let mut f = template(0, 1, 2, 9000);
        stamp(&mut f, 7, 99, 1);
        // 2048-byte buffers, and pieces whose split falls inside the trailer.
        for cut in [2048, f.len() - 5, f.len() - TRAILER, f.len() - 1] {
            let pieces = f[..cut].chunks(2048).chain(std::iter::once(&f[cut..]));
            let t = tail(f.len(), pieces);
            assert_eq!(read_split(&f[..2048], f.len(), &t), Some((7, 99, 1)), "cut at {cut}");
        }
        let t = tail(f.len(), f.chunks(1000));
        assert_eq!(read_split(&f[..30], f.len(), &t), None, "a head too short for the UDP header");
        assert_eq!(tail(10, [&f[..10]].into_iter()), [0; TRAILER], "shorter than a trailer");
    }

    #[test]
    fn tcp_segments_have_valid_headers_and_round_trip() {
        let mut f = tcp_template(0, 1, 5, 3, TSO_PAYLOAD);
        assert_eq!(f.len(), TCP_HEADERS + TSO_PAYLOAD);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
        let ip: [u8; 20] = f[14..34].try_into().unwrap();
        assert_eq!(ip_checksum(&ip), 0);
        assert_eq!(f[6..12], flow_mac(0, 5));
        // The checksum field plus the TCP segment's own sum is the full
        // checksum: finishing it over a correct segment sums to zero.
        let full = !fold(u32::from(u16::from_be_bytes([f[50], f[51]])) + sum16(&f[34..50]) + sum16(&f[52..]));
        let mut done = f.clone();
        done[50..52].copy_from_slice(&full.to_be_bytes());
        assert_eq!(fold(sum16(&done[26..34]) + 6 + (f.len() - 34) as u32 + sum16(&done[34..])), 0xffff);
        tcp_stamp(&mut f, 0xfedc_ba98, 0x1234_5670);
        let p = read_tcp(&f).unwrap();
        assert_eq!(p, TcpPiece { stream: 3, seq: 0xfedc_ba98, stamp: 0x0123_4567, len: TSO_PAYLOAD as u32 });
        assert_eq!(stamp_age(p.stamp, 0x1234_5670 + 160), 160);
        assert_eq!(read(&f), None, "not a UDP benchmark frame");
        assert_eq!(read_tcp(&template(0, 1, 5, 1518)), None);
    }
}
