//! virtio-net feature bits: what each datapath offers a guest, and their
//! names for `show ports`.

/// (bit, name) of every feature a switch port may negotiate or refuse.
const NAMES: [(u32, &str); 25] = [
    (0, "csum"),
    (1, "guest_csum"),
    (3, "mtu"),
    (5, "mac"),
    (7, "guest_tso4"),
    (8, "guest_tso6"),
    (9, "guest_ecn"),
    (10, "guest_ufo"),
    (11, "host_tso4"),
    (12, "host_tso6"),
    (13, "host_ecn"),
    (14, "host_ufo"),
    (15, "mrg_rxbuf"),
    (17, "ctrl_vq"),
    (18, "ctrl_rx"),
    (21, "guest_announce"),
    (22, "mq"),
    (26, "log_all"),
    (27, "any_layout"),
    (28, "indirect_desc"),
    (29, "event_idx"),
    (30, "protocol_features"),
    (32, "version_1"),
    (34, "ring_packed"),
    (35, "in_order"),
];

pub const CSUM: u64 = 1 << 0;
pub const GUEST_CSUM: u64 = 1 << 1;
pub const MTU: u64 = 1 << 3;
pub const GUEST_TSO4: u64 = 1 << 7;
pub const GUEST_TSO6: u64 = 1 << 8;
pub const GUEST_ECN: u64 = 1 << 9;
pub const GUEST_UFO: u64 = 1 << 10;
pub const HOST_TSO4: u64 = 1 << 11;
pub const HOST_TSO6: u64 = 1 << 12;
pub const HOST_ECN: u64 = 1 << 13;
pub const HOST_UFO: u64 = 1 << 14;
pub const MRG_RXBUF: u64 = 1 << 15;
pub const GUEST_ANNOUNCE: u64 = 1 << 21;
pub const MQ: u64 = 1 << 22;
pub const LOG_ALL: u64 = 1 << 26;
pub const ANY_LAYOUT: u64 = 1 << 27;
pub const INDIRECT_DESC: u64 = 1 << 28;
pub const EVENT_IDX: u64 = 1 << 29;
pub const PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VERSION_1: u64 = 1 << 32;
pub const RING_PACKED: u64 = 1 << 34;
pub const IN_ORDER: u64 = 1 << 35;

/// Checksum and TCP segmentation both ways. UFO is not offered: the
/// switch segments TCP only (and Linux no longer sends UFO).
pub const OFFLOADS: u64 = CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN | HOST_TSO4 | HOST_TSO6 | HOST_ECN;

/// Everything either datapath must never offer: UDP fragmentation offload.
pub const UFO: u64 = GUEST_UFO | HOST_UFO;

/// What a copy-once port offers: split rings, or packed ones too where
/// the port asks (`packed_rings`), and IN_ORDER where it asks (`in_order`:
/// DPDK's virtio driver then takes its in-order paths; such a guest's
/// chains go back in order, none lent to NICs); the rest (IOMMU, UFO) is
/// refused rather than half-supported. LOG_ALL: every write into the guest
/// marks the dirty log QEMU shares during a migration (`GuestMemory`).
/// GUEST_ANNOUNCE: after a migration the guest announces itself (QEMU's
/// control queue), so the RARP rte_vhost would inject on our behalf is not
/// needed. MTU: QEMU's `host_mtu` reaches the guest.
pub fn copy_once(offloads: bool, packed: bool, in_order: bool) -> u64 {
    let base = VERSION_1 | MRG_RXBUF | ANY_LAYOUT | MQ | PROTOCOL_FEATURES | LOG_ALL | GUEST_ANNOUNCE | MTU | INDIRECT_DESC | EVENT_IDX;
    base | if offloads { OFFLOADS } else { 0 } | if packed { RING_PACKED } else { 0 } | if in_order { IN_ORDER } else { 0 }
}

/// The names of the bits set in `features`, lowest first; unknown bits as
/// `bitN`.
pub fn names(features: u64) -> Vec<String> {
    (0..64)
        .filter(|b| features & (1u64 << b) != 0)
        .map(|b| match NAMES.iter().find(|(bit, _)| *bit == b) {
            Some((_, n)) => n.to_string(),
            None => format!("bit{b}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_bit_order_and_unknown_bits_by_number() {
        assert_eq!(names(CSUM | VERSION_1 | 1 << 40), ["csum", "version_1", "bit40"]);
        assert!(names(copy_once(false, false, false)).iter().all(|n| !n.contains("tso") && !n.contains("csum") && n != "in_order"));
        assert_eq!(copy_once(true, true, true) & UFO, 0);
        assert!(names(copy_once(false, false, true)).contains(&"in_order".to_string()));
    }
}
