//! Benchmark frames: Ethernet/IPv4/UDP templates built once per flow, with
//! an 18-byte trailer written per packet (sequence number, TSC timestamp,
//! stream id) that fits even a 64-byte frame.
//!
//! Sizes follow RFC 2544: a "64-byte frame" counts the 4-byte FCS the NIC
//! would add, so the mbuf holds size - 4 bytes.
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
    f.extend_from_slice(&flow_mac(dst_vm, flow));
    f.extend_from_slice(&flow_mac(src_vm, flow));
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&flow_ip(src_vm, flow));
    ip[16..20].copy_from_slice(&flow_ip(dst_vm, flow));
    let csum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
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

fn ip_checksum(h: &[u8; 20]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
    if frame.len() < HEADERS + TRAILER || frame[36..38] != BENCH_PORT.to_be_bytes() {
        return None;
    }
    let t = frame.len() - TRAILER;
    let seq = u64::from_le_bytes(frame[t..t + 8].try_into().ok()?);
    let tsc = u64::from_le_bytes(frame[t + 8..t + 16].try_into().ok()?);
    let stream = u16::from_le_bytes(frame[t + 16..t + 18].try_into().ok()?);
    Some((seq, tsc, stream))
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
}
