//! Frames as a guest's stack hands them to virtio-net with TSO: one IP
//! packet of up to 64 KB whose TCP checksum field holds the pseudo-header
//! sum (NEEDS_CSUM), and the header asking for it.
pub use crate::test_rng::Rng;

use super::csum::{ipv4_header_checksum, pseudo_v4, pseudo_v6, IPV4_CSUM};
use super::hdr::{NetHdr, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};

pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;
pub const CWR: u8 = 0x80;

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub v6: bool,
    pub vlan: bool,
    /// Bytes of IPv4 options (NOPs), a multiple of 4.
    pub ip_opts: usize,
    /// Bytes of TCP options (NOPs), a multiple of 4.
    pub tcp_opts: usize,
    pub payload: usize,
    pub tcp_flags: u8,
    pub ip_id: u16,
    pub seq: u32,
}

impl Spec {
    pub const V4: Spec =
        Spec { v6: false, vlan: false, ip_opts: 0, tcp_opts: 12, payload: 3000, tcp_flags: ACK | PSH, ip_id: 0x1234, seq: 1000 };
    pub const V6: Spec = Spec { v6: true, ..Spec::V4 };

    pub fn l2(&self) -> usize {
        if self.vlan {
            18
        } else {
            14
        }
    }

    pub fn l3(&self) -> usize {
        if self.v6 {
            40
        } else {
            20 + self.ip_opts
        }
    }

    pub fn l4(&self) -> usize {
        20 + self.tcp_opts
    }

    pub fn hdr_len(&self) -> usize {
        self.l2() + self.l3() + self.l4()
    }

    pub fn frame_len(&self) -> usize {
        self.hdr_len() + self.payload
    }

    /// The virtio-net header a Linux guest writes for this frame with TSO.
    pub fn tso_hdr(&self, mss: u16) -> NetHdr {
        NetHdr {
            flags: NEEDS_CSUM,
            gso_type: if self.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: self.hdr_len() as u16,
            gso_size: mss,
            csum_start: (self.l2() + self.l3()) as u16,
            csum_offset: 16,
        }
    }

    /// The frame's bytes; the payload is pseudo-random.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1];
        if self.vlan {
            f.extend([0x81, 0x00, 0x00, 0x0a]);
        }
        let l4_len = self.l4() + self.payload;
        if self.v6 {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend((l4_len as u16).to_be_bytes());
            f.extend([6, 64]);
            f.extend(SRC6);
            f.extend(DST6);
        } else {
            f.extend([0x08, 0x00, 0x40 | (self.l3() / 4) as u8, 0]);
            f.extend(((self.l3() + l4_len) as u16).to_be_bytes());
            f.extend(self.ip_id.to_be_bytes());
            f.extend([0x40, 0, 64, 6, 0, 0]);
            f.extend(SRC4);
            f.extend(DST4);
            f.extend(vec![1; self.ip_opts]);
            let ip = &mut f[self.l2()..];
            let c = ipv4_header_checksum(&ip[..self.l3()]);
            ip[IPV4_CSUM..IPV4_CSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
        let pseudo = if self.v6 {
            pseudo_v6(&SRC6, &DST6, 6, l4_len as u32)
        } else {
            pseudo_v4(SRC4, DST4, 6, l4_len as u16)
        };
        f.extend([0x9c, 0x40, 0x00, 0x50]);
        f.extend(self.seq.to_be_bytes());
        f.extend(0x0bad_cafe_u32.to_be_bytes());
        f.extend([(self.l4() / 4) as u8 * 16, self.tcp_flags, 0x01, 0xf6]);
        f.extend(pseudo.fold().to_be_bytes());
        f.extend([0, 0]);
        f.extend(vec![1; self.tcp_opts]);
        f.extend(random_bytes(self.payload, self.payload as u64 + 1));
        f
    }
}

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..n).map(|_| rng.next() as u8).collect()
}
