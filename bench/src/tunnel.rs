//! The VXLAN scenarios' remote tunnel endpoint: the generator's VM cabled
//! to the switch's underlay NIC plays a second host, so its frames leave
//! wrapped in outer Ethernet/IPv4/UDP/VXLAN headers (RFC 7348) and what
//! reaches it is unwrapped before the sink reads it. The same frames, the
//! same sink: only the 50 bytes in front differ.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pmd_bridge::{Burst, Mempool};

/// Outer headers: Ethernet, IPv4 (no options), UDP, VXLAN.
pub const OUTER_LEN: usize = 14 + 20 + 8 + 8;
pub const VXLAN_PORT: u16 = 4789;
pub const VNI: u32 = 42;
/// The switch's tunnel address and the remote's (the generator's VM), on
/// a subnet of their own.
pub const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 1);
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
/// The remote's MAC on the underlay.
pub const REMOTE_MAC: [u8; 6] = [0x02, 0xc7, 0, 0, 0, 2];

/// The remote endpoint's view of the tunnel, once it knows the switch's
/// underlay MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub switch_mac: [u8; 6],
}

impl Remote {
    /// `inner` (a whole Ethernet frame) behind outer headers from the
    /// remote to the switch. The UDP checksum is 0 (allowed over IPv4), as
    /// Linux and OVS send it.
    pub fn wrap(&self, inner: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(OUTER_LEN + inner.len());
        f.extend_from_slice(&self.switch_mac);
        f.extend_from_slice(&REMOTE_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let ip_len = (20 + 8 + 8 + inner.len()) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&REMOTE_IP.octets());
        ip[16..20].copy_from_slice(&SWITCH_IP.octets());
        let csum = !crate::frame::fold(crate::frame::sum16(&ip));
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&ip);
        // A source port per inner flow would spread flows over ECMP paths;
        // one path here, so one port.
        f.extend_from_slice(&49152u16.to_be_bytes());
        f.extend_from_slice(&VXLAN_PORT.to_be_bytes());
        f.extend_from_slice(&(ip_len - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&[0x08, 0, 0, 0]);
        f.extend_from_slice(&(VNI << 8).to_be_bytes());
        f.extend_from_slice(inner);
        f
    }
}

/// Where the inner frame starts in `head` (a frame's first segment): after
/// the outer headers of a VXLAN packet, else 0.
#[inline(always)]
pub fn inner_offset(head: &[u8]) -> usize {
    let vxlan = head.len() >= OUTER_LEN && head[12..14] == [0x08, 0x00] && head[14] == 0x45 && head[23] == 17 && head[36..38] == VXLAN_PORT.to_be_bytes();
    if vxlan {
        OUTER_LEN
    } else {
        0
    }
}

/// An ARP request from the remote for the switch's tunnel address.
fn arp_request() -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&REMOTE_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&REMOTE_MAC);
    f.extend_from_slice(&REMOTE_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&SWITCH_IP.octets());
    f.resize(60, 0);
    f
}

/// The sender MAC of an ARP reply from the switch's tunnel address to the
/// remote, if `f` is one.
fn arp_reply_mac(f: &[u8]) -> Option<[u8; 6]> {
    let ok = f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == SWITCH_IP.octets() && f[38..42] == REMOTE_IP.octets();
    ok.then(|| f[22..28].try_into().expect("6 bytes"))
}

/// Asks the switch for its underlay MAC as a host would (ARP for its tunnel
/// address, every 100 ms, up to `deadline`), from the VM cabled to it.
pub fn resolve(vm: &mut crate::gen::VmPort, pool: &Mempool, deadline: Duration) -> Result<Remote, String> {
    let start = Instant::now();
    let mut asked: Option<Instant> = None;
    let mut rx = Burst::<32>::new();
    while start.elapsed() < deadline {
        if asked.is_none_or(|t| t.elapsed() > Duration::from_millis(100)) {
            let mut b = Burst::<1>::new();
            let _ = b.push(pool.alloc_from(&arp_request()).ok_or("mbuf pool empty")?);
            vm.tx.tx_burst(&mut b);
            asked = Some(Instant::now());
        }
        vm.rx.rx_burst(&mut rx);
        let mac = rx.iter().find_map(|m| arp_reply_mac(m.data()));
        rx.clear();
        if let Some(switch_mac) = mac {
            return Ok(Remote { switch_mac });
        }
    }
    Err(format!("{}: no ARP reply for {SWITCH_IP} within {deadline:?}", vm.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_frames_are_found_again() {
        let inner = crate::frame::template(1, 0, 3, 64);
        let r = Remote { switch_mac: [2, 0, 0, 0, 0, 1] };
        let f = r.wrap(&inner);
        assert_eq!(f.len(), OUTER_LEN + inner.len());
        assert_eq!(crate::frame::fold(crate::frame::sum16(&f[14..34])), 0xffff, "a valid IPv4 header checksum");
        assert_eq!(inner_offset(&f), OUTER_LEN);
        assert_eq!(&f[OUTER_LEN..], &inner[..]);
        assert_eq!(inner_offset(&inner), 0, "a benchmark frame is not VXLAN");
        assert_eq!(inner_offset(&f[..20]), 0);
    }

    #[test]
    fn arp_reply_of_the_switch_only() {
        let mut reply = arp_request();
        reply[20..22].copy_from_slice(&[0, 2]);
        reply[22..28].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
        reply[28..32].copy_from_slice(&SWITCH_IP.octets());
        reply[32..38].copy_from_slice(&REMOTE_MAC);
        reply[38..42].copy_from_slice(&REMOTE_IP.octets());
        assert_eq!(arp_reply_mac(&reply), Some([2, 9, 9, 9, 9, 9]));
        assert_eq!(arp_reply_mac(&arp_request()), None, "a request is no answer");
    }
}
