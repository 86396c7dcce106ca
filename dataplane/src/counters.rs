//! Counters: per port, per drop reason, per PMD thread.
//!
//! Each PMD thread owns one `PmdCounters` block and is its only writer, so an
//! update is a relaxed load and store, not an atomic read-modify-write; the
//! control thread reads every block and sums. Updates are made once per
//! burst from local tallies, never per packet. Clearing is done by the
//! reader keeping a baseline, so the writer's counters never go backwards.
//!
//! Every received packet ends in exactly one rx disposition: forwarded
//! (unicast to one port), flooded, or one of the rx-side drop reasons. The
//! tx-side reasons count copies that an output could not take, per output
//! port; a flooded packet may be delivered on some ports and dropped on one.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::offload::HdrError;

/// Most ports a switch holds (port slots).
pub const MAX_PORTS: usize = 64;
/// Most rx queues a port has.
pub const MAX_RXQ: usize = 16;

macro_rules! drop_reasons {
    ($($variant:ident = $name:literal, $side:ident: $doc:literal;)*) => {
        /// Why a packet (or one output's copy of it) was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The name the CLI shows.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// Whether the reason is one of the rx dispositions (else it
            /// counts an output's copy).
            pub fn is_rx_side(self) -> bool {
                match self { $(DropReason::$variant => drop_reasons!(@side $side),)* }
            }
        }
    };
    (@side rx) => { true };
    (@side tx) => { false };
}

drop_reasons! {
    Runt = "runt", rx: "Shorter than its Ethernet (and 802.1Q) header.";
    Malformed = "malformed", rx: "Multicast source MAC, stacked or service tags.";
    Oversize = "oversize", rx: "Longer than the input port's MTU allows.";
    VlanFiltered = "vlan_filtered", rx: "Tag not allowed on the input port (or a tag on an access port).";
    SamePort = "same_port", rx: "Unicast to a MAC learned on the input port itself.";
    Policed = "policed", rx: "Over the input port's ingress policing rate (its token bucket empty).";
    VxlanShort = "vxlan_short", rx: "Underlay: VXLAN shorter than its headers say, or with no inner Ethernet header.";
    VxlanFlags = "vxlan_flags", rx: "Underlay: VXLAN without the I flag, or with a flag RFC 7348 does not define.";
    VxlanBadIp = "vxlan_bad_ip", rx: "Underlay: VXLAN in an IP fragment or under a bad IPv4 header checksum.";
    VxlanUnknownVni = "vxlan_unknown_vni", rx: "Underlay: VXLAN to a local address with a VNI no vxlan port has.";
    VxlanUnknownRemote = "vxlan_unknown_remote", rx: "Underlay: VXLAN from an address not in the port's remote_ips.";
    NoMbuf = "no_mbuf", tx: "No mbuf for a VLAN header or copy on output.";
    TxFull = "tx_full", tx: "Output queue (or guest receive ring) full after the retries.";
    PortDown = "port_down", tx: "Output port has no queue to send on (guest not connected).";
    UnderlayMtu = "underlay_mtu", tx: "vxlan port: the frame encapsulated would not fit the underlay's MTU (never fragmented).";
    NoNeighbour = "no_neighbour", tx: "vxlan port: the remote's link-layer address is not known yet (asked by ARP).";
    BadHead = "bad_head", tx: "Copy-once guest: the avail ring names a head beyond the descriptor table.";
    BadNext = "bad_next", tx: "Copy-once guest: a descriptor's next index beyond the table.";
    ChainTooLong = "chain_too_long", tx: "Copy-once guest: a chain longer than the ring (a next loop), 64 buffers or its descriptor cap.";
    OutsideMemory = "outside_memory", tx: "Copy-once guest: a buffer not wholly inside guest memory.";
    WrongDirection = "wrong_direction", tx: "Copy-once guest: a WRITE flag that does not fit the queue.";
    Indirect = "indirect", tx: "Copy-once guest: an indirect descriptor (not negotiated).";
    BadIndirect = "bad_indirect", tx: "Copy-once guest: an indirect table of a bad length, nested, chained, or with a next index beyond it.";
    BadLength = "bad_length", tx: "Copy-once guest: a transmit chain shorter than its virtio-net header or longer than 64 KB, or a zero-length buffer.";
    HdrTooLong = "hdr_too_long", tx: "Copy-once guest: a frame longer than 64 KB plus headers, or than its IP length can say.";
    HdrNotNegotiated = "hdr_offload_not_negotiated", tx: "Copy-once guest: a checksum or GSO request it did not negotiate.";
    HdrCsumOutOfFrame = "hdr_csum_out_of_frame", tx: "Copy-once guest: a checksum field outside the frame's headers.";
    HdrUnknownGsoType = "hdr_unknown_gso_type", tx: "Copy-once guest: UDP or an undefined GSO type.";
    HdrEcnNotNegotiated = "hdr_ecn_not_negotiated", tx: "Copy-once guest: the GSO ECN bit without HOST_ECN.";
    HdrMissingCsum = "hdr_missing_csum", tx: "Copy-once guest: GSO without NEEDS_CSUM.";
    HdrGsoSizeZero = "hdr_gso_size_zero", tx: "Copy-once guest: GSO with gso_size 0.";
    HdrGsoSizeTooSmall = "hdr_gso_size_too_small", tx: "Copy-once guest: GSO with an MSS below 48.";
    HdrGsoNotTcp = "hdr_gso_not_tcp", tx: "Copy-once guest: a TCP GSO type on a frame that is not TCP over that IP version.";
    HdrBadHeaders = "hdr_bad_headers", tx: "Copy-once guest: offload on truncated or malformed headers, a fragment, or an IP length that is not the frame's.";
    HdrGsoSizeTooLarge = "hdr_gso_size_too_large", tx: "Copy-once guest: an MSS whose segment would not fit an IP packet.";
    FlowDrop = "flow_drop", rx: "Matched an OpenFlow flow with no output (`actions=drop`).";
}

impl DropReason {
    /// The counter for a frame refused for its virtio-net header.
    pub fn bad_header(e: HdrError) -> DropReason {
        match e {
            HdrError::TooLong => DropReason::HdrTooLong,
            HdrError::OffloadNotNegotiated => DropReason::HdrNotNegotiated,
            HdrError::CsumOutOfFrame => DropReason::HdrCsumOutOfFrame,
            HdrError::UnknownGsoType => DropReason::HdrUnknownGsoType,
            HdrError::EcnNotNegotiated => DropReason::HdrEcnNotNegotiated,
            HdrError::MissingCsum => DropReason::HdrMissingCsum,
            HdrError::GsoSizeZero => DropReason::HdrGsoSizeZero,
            HdrError::GsoSizeTooSmall => DropReason::HdrGsoSizeTooSmall,
            HdrError::GsoNotTcp => DropReason::HdrGsoNotTcp,
            HdrError::BadHeaders => DropReason::HdrBadHeaders,
            HdrError::GsoSizeTooLarge => DropReason::HdrGsoSizeTooLarge,
        }
    }

    /// The counter for a chain a copy-once port refused (and returned
    /// empty).
    pub fn refused(e: crate::virtq::ChainError) -> DropReason {
        use crate::virtq::ChainError as E;
        match e {
            E::HeadOutOfRange => DropReason::BadHead,
            E::NextOutOfRange => DropReason::BadNext,
            E::TooLong => DropReason::ChainTooLong,
            E::OutsideMemory => DropReason::OutsideMemory,
            E::WrongDirection => DropReason::WrongDirection,
            E::Indirect => DropReason::Indirect,
            E::BadIndirect => DropReason::BadIndirect,
            E::BadLength => DropReason::BadLength,
        }
    }
}

/// One count per drop reason: an array longer than std's `Default` goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerReason<T>(pub [T; DropReason::COUNT]);

impl<T: Default> Default for PerReason<T> {
    fn default() -> Self {
        PerReason(std::array::from_fn(|_| T::default()))
    }
}

impl<T> std::ops::Deref for PerReason<T> {
    type Target = [T; DropReason::COUNT];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T> std::ops::DerefMut for PerReason<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a, T> IntoIterator for &'a PerReason<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One port's counters within one PMD thread's block.
#[derive(Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub forwarded: AtomicU64,
    pub flooded: AtomicU64,
    /// Frames forwarded whose source MAC could not be learned (table,
    /// bucket or the port's `mac_limit` full): not a disposition.
    pub unlearned: AtomicU64,
    pub drops: PerReason<AtomicU64>,
    /// Polls that received something from it: `rx_packets` over these is
    /// the packets a burst it gave.
    pub rx_bursts: AtomicU64,
    /// The packets of the polls that took a whole burst (`BURST` frames)
    /// from it, and their busy cycles: what a frame costs at a full burst,
    /// to compare ports whose guests offer bursts of different sizes.
    pub full_burst_packets: AtomicU64,
    pub full_burst_cycles: AtomicU64,
}

/// Where a packet went, for copy accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Path {
    VmVm,
    VmNic,
    NicVm,
    NicNic,
    Flood,
}

impl Path {
    pub const ALL: [Path; 5] = [Path::VmVm, Path::VmNic, Path::NicVm, Path::NicNic, Path::Flood];

    pub fn of(from_vm: bool, to_vm: bool) -> Path {
        match (from_vm, to_vm) {
            (true, true) => Path::VmVm,
            (true, false) => Path::VmNic,
            (false, true) => Path::NicVm,
            (false, false) => Path::NicNic,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::VmVm => "vm-vm",
            Path::VmNic => "vm-nic",
            Path::NicVm => "nic-vm",
            Path::NicNic => "nic-nic",
            Path::Flood => "flood",
        }
    }
}

/// Packets on one path, and the payload copies made for them (receive-side
/// copies out of a guest plus one per delivery into a guest).
#[derive(Default)]
pub struct PathCounters {
    pub packets: AtomicU64,
    pub payload_copies: AtomicU64,
    pub bytes_copied: AtomicU64,
}

/// What became of a copy-once guest's frame bound for a NIC: lent from
/// guest memory (no payload copy), or copied, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ZeroCopy {
    Lent,
    /// Shorter than `zero_copy_min_bytes`: a copy costs less than a loan.
    Small,
    /// The ring's chains in flight in NICs reached `zero_copy_in_flight`.
    InFlightLimit,
    /// The NIC cannot read guest memory (not DMA-mapped, or a driver that
    /// hands buffers to another process).
    NotMapped,
    /// Offloads the NIC cannot do, too many pieces, no mbuf, or chains of an
    /// older memory table still out.
    Other,
}

impl ZeroCopy {
    pub const ALL: [ZeroCopy; 5] = [ZeroCopy::Lent, ZeroCopy::Small, ZeroCopy::InFlightLimit, ZeroCopy::NotMapped, ZeroCopy::Other];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            ZeroCopy::Lent => "lent",
            ZeroCopy::Small => "small",
            ZeroCopy::InFlightLimit => "in_flight_limit",
            ZeroCopy::NotMapped => "not_dma_mapped",
            ZeroCopy::Other => "other",
        }
    }
}

/// One PMD thread's counters; written only by that thread.
pub struct PmdCounters {
    pub ports: Vec<PortCounters>,
    pub paths: [PathCounters; 5],
    /// Copy-once frames bound for NICs, by outcome (`ZeroCopy`).
    pub zero_copy: [AtomicU64; ZeroCopy::COUNT],
    /// TSC cycles of polls that received something (each poll from the end
    /// of the one before it, the loop's own work between them included).
    pub busy_cycles: AtomicU64,
    /// TSC cycles of polls that had nothing (measured alike).
    pub idle_cycles: AtomicU64,
    /// Packets received.
    pub packets: AtomicU64,
    /// Non-empty rx bursts (packets / bursts = average burst size).
    pub bursts: AtomicU64,
    /// Loop iterations.
    pub iterations: AtomicU64,
    /// TSC cycles spent asleep (`pmd_sleep_max_us`), and the sleeps; of
    /// those, the ones until a guest's kick (`idle`), and the ones a kick
    /// ended.
    pub sleep_cycles: AtomicU64,
    pub sleeps: AtomicU64,
    pub kick_sleeps: AtomicU64,
    pub kicked: AtomicU64,
    /// Busy cycles per rx queue (by port slot, then queue): what rx queue
    /// placement weighs. A queue moved to another thread goes on counting
    /// in that thread's block; the reader sums the blocks.
    pub rxq_cycles: Vec<[AtomicU64; MAX_RXQ]>,
}

impl Default for PmdCounters {
    fn default() -> Self {
        PmdCounters {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            paths: Default::default(),
            zero_copy: Default::default(),
            busy_cycles: AtomicU64::new(0),
            idle_cycles: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            bursts: AtomicU64::new(0),
            iterations: AtomicU64::new(0),
            sleep_cycles: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            kick_sleeps: AtomicU64::new(0),
            kicked: AtomicU64::new(0),
            rxq_cycles: (0..MAX_PORTS).map(|_| Default::default()).collect(),
        }
    }
}

/// Whether any count is not zero: one pass of ORs, which the compiler does
/// a vector at a time (most bursts drop nothing; their counts are skipped
/// with one test rather than one a reason).
#[inline]
pub fn any<T: Copy + Into<u64>>(counts: &[T]) -> bool {
    counts.iter().fold(0, |a, &n| a | n.into()) != 0
}

/// Adds `n` to a counter that only this thread writes.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Moves a copy-once ring's refused-chain counts into a port's drops.
#[inline]
pub fn count_refused(refused: &mut crate::virtq::Refused, drops: &[AtomicU64; DropReason::COUNT]) {
    if refused.total() > 0 {
        for (e, n) in refused.take() {
            bump(&drops[DropReason::refused(e) as usize], n as u64);
        }
    }
}

/// Publishes and zeroes a copy-once ring's header refusals (`bad`, by
/// `HdrError` index), once per burst.
pub fn count_bad_headers(bad: &mut [u32], drops: &[AtomicU64; DropReason::COUNT]) {
    if !any(bad) {
        return;
    }
    for (&e, n) in HdrError::ALL.iter().zip(bad.iter_mut()) {
        if *n > 0 {
            bump(&drops[DropReason::bad_header(e) as usize], std::mem::take(n) as u64);
        }
    }
}

/// A plain copy of one port's counters, summed over PMD threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub forwarded: u64,
    pub flooded: u64,
    pub unlearned: u64,
    pub drops: PerReason<u64>,
    /// Polls that received something from it.
    pub rx_bursts: u64,
    /// The packets of the polls that took a whole burst from it, and
    /// their busy cycles.
    pub full_burst_packets: u64,
    pub full_burst_cycles: u64,
    /// Busy cycles of the polls of its rx queues (`PmdCounters::rxq_cycles`:
    /// what the bursts it sent in cost, forwarding included).
    pub busy_cycles: u64,
}

impl PortTotals {
    pub fn add(&mut self, c: &PortCounters) {
        self.rx_packets += c.rx_packets.load(Relaxed);
        self.rx_bytes += c.rx_bytes.load(Relaxed);
        self.tx_packets += c.tx_packets.load(Relaxed);
        self.tx_bytes += c.tx_bytes.load(Relaxed);
        self.forwarded += c.forwarded.load(Relaxed);
        self.flooded += c.flooded.load(Relaxed);
        self.unlearned += c.unlearned.load(Relaxed);
        self.rx_bursts += c.rx_bursts.load(Relaxed);
        self.full_burst_packets += c.full_burst_packets.load(Relaxed);
        self.full_burst_cycles += c.full_burst_cycles.load(Relaxed);
        for (t, d) in self.drops.iter_mut().zip(&c.drops) {
            *t += d.load(Relaxed);
        }
    }

    /// Port `slot`'s counters in one PMD thread's block, its rx queues'
    /// busy cycles with them.
    pub fn add_pmd(&mut self, c: &PmdCounters, slot: usize) {
        self.add(&c.ports[slot]);
        self.busy_cycles += c.rxq_cycles[slot].iter().map(|q| q.load(Relaxed)).sum::<u64>();
    }

    /// `self - base`, for counters cleared by baseline.
    pub fn since(&self, base: &PortTotals) -> PortTotals {
        let mut d = PortTotals {
            rx_packets: self.rx_packets - base.rx_packets,
            rx_bytes: self.rx_bytes - base.rx_bytes,
            tx_packets: self.tx_packets - base.tx_packets,
            tx_bytes: self.tx_bytes - base.tx_bytes,
            forwarded: self.forwarded - base.forwarded,
            flooded: self.flooded - base.flooded,
            unlearned: self.unlearned - base.unlearned,
            drops: self.drops.clone(),
            rx_bursts: self.rx_bursts - base.rx_bursts,
            full_burst_packets: self.full_burst_packets - base.full_burst_packets,
            full_burst_cycles: self.full_burst_cycles - base.full_burst_cycles,
            busy_cycles: self.busy_cycles - base.busy_cycles,
        };
        for (x, b) in d.drops.iter_mut().zip(&base.drops) {
            *x -= b;
        }
        d
    }

    pub fn drop(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Sum of the rx dispositions: equals rx_packets when nothing is in flight.
    pub fn rx_dispositions(&self) -> u64 {
        let rx_drops: u64 = DropReason::ALL.iter().filter(|r| r.is_rx_side()).map(|&r| self.drop(r)).sum();
        self.forwarded + self.flooded + rx_drops
    }
}

/// A plain copy of one PMD thread's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PmdTotals {
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub packets: u64,
    pub bursts: u64,
    pub iterations: u64,
    pub sleep_cycles: u64,
    pub sleeps: u64,
    pub kick_sleeps: u64,
    pub kicked: u64,
}

impl PmdTotals {
    pub fn read(c: &PmdCounters) -> PmdTotals {
        PmdTotals {
            busy_cycles: c.busy_cycles.load(Relaxed),
            idle_cycles: c.idle_cycles.load(Relaxed),
            packets: c.packets.load(Relaxed),
            bursts: c.bursts.load(Relaxed),
            iterations: c.iterations.load(Relaxed),
            sleep_cycles: c.sleep_cycles.load(Relaxed),
            sleeps: c.sleeps.load(Relaxed),
            kick_sleeps: c.kick_sleeps.load(Relaxed),
            kicked: c.kicked.load(Relaxed),
        }
    }

    pub fn since(&self, base: &PmdTotals) -> PmdTotals {
        PmdTotals {
            busy_cycles: self.busy_cycles - base.busy_cycles,
            idle_cycles: self.idle_cycles - base.idle_cycles,
            packets: self.packets - base.packets,
            bursts: self.bursts - base.bursts,
            iterations: self.iterations - base.iterations,
            sleep_cycles: self.sleep_cycles - base.sleep_cycles,
            sleeps: self.sleeps - base.sleeps,
            kick_sleeps: self.kick_sleeps - base.kick_sleeps,
            kicked: self.kicked - base.kicked,
        }
    }

    pub fn avg_burst(&self) -> f64 {
        if self.bursts == 0 { 0.0 } else { self.packets as f64 / self.bursts as f64 }
    }

    pub fn cycles_per_packet(&self) -> f64 {
        if self.packets == 0 { 0.0 } else { self.busy_cycles as f64 / self.packets as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_unique_names_and_sides() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert!(DropReason::Runt.is_rx_side() && !DropReason::TxFull.is_rx_side());
    }

    #[test]
    fn totals_sum_and_baseline() {
        let a = PortCounters::default();
        bump(&a.rx_packets, 5);
        bump(&a.forwarded, 3);
        bump(&a.drops[DropReason::Runt as usize], 2);
        bump(&a.drops[DropReason::TxFull as usize], 7);
        let mut t = PortTotals::default();
        t.add(&a);
        assert_eq!(t.rx_dispositions(), t.rx_packets, "tx-side drops are not dispositions");
        let base = t.clone();
        bump(&a.rx_packets, 1);
        bump(&a.rx_bursts, 1);
        bump(&a.full_burst_packets, 32);
        bump(&a.full_burst_cycles, 90);
        let mut t2 = PortTotals::default();
        t2.add(&a);
        let d = t2.since(&base);
        assert_eq!((d.rx_packets, d.rx_bursts, d.full_burst_packets, d.full_burst_cycles), (1, 1, 32, 90));
    }
}
