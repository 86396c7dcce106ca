//! Why a chain is refused, and why a whole queue stops.
use pmd_bridge::guest_mem::OutOfBounds;

use super::Pop;

/// Why a chain was refused (it goes back to the guest with length 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainError {
    /// The avail ring names a head beyond the descriptor table; in a packed
    /// ring, a buffer id beyond the ring or already in flight.
    HeadOutOfRange,
    /// A `next` index beyond the descriptor table.
    NextOutOfRange,
    /// Longer than the ring or an indirect table (a `next` loop), or than
    /// `MAX_DESCS` descriptors or `MAX_SEGS` spans; or an indirect table of
    /// more than `MAX_DESCS` entries.
    TooLong,
    /// A buffer not wholly inside guest memory.
    OutsideMemory,
    /// A WRITE flag that does not match the queue's direction.
    WrongDirection,
    /// An INDIRECT descriptor, indirect tables not being negotiated.
    Indirect,
    /// A zero-length buffer; or a transmit chain shorter than the
    /// virtio-net header, or longer than any frame (`MAX_READ`).
    BadLength,
    /// A malformed indirect descriptor or table: a length that is zero or
    /// not a multiple of 16, INDIRECT with NEXT, INDIRECT inside the table,
    /// or a `next` beyond the table.
    BadIndirect,
}

impl ChainError {
    pub const ALL: [ChainError; 8] = [
        ChainError::HeadOutOfRange,
        ChainError::NextOutOfRange,
        ChainError::TooLong,
        ChainError::OutsideMemory,
        ChainError::WrongDirection,
        ChainError::Indirect,
        ChainError::BadLength,
        ChainError::BadIndirect,
    ];
}

/// Chains refused since the counts were last taken, by reason (a PMD
/// thread publishes them into its drop counters once per burst).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused(pub [u32; ChainError::ALL.len()]);

impl Refused {
    #[inline]
    pub fn add(&mut self, e: ChainError) {
        self.0[e as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&n| n as u64).sum()
    }

    /// (reason, count) for each reason seen, and the counts zeroed.
    pub fn take(&mut self) -> impl Iterator<Item = (ChainError, u32)> {
        let counts = std::mem::take(&mut self.0);
        ChainError::ALL.into_iter().zip(counts).filter(|&(_, n)| n > 0)
    }
}

/// Why the whole queue stops: its own state is invalid. Kept to 8 bytes,
/// so that the queue operations' results come back in registers: one
/// returned through memory is read back before the burst's stores into
/// guest memory have drained, and waits for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// avail->idx ran more than the ring size ahead of what we consumed.
    AvailJump { avail: u16, consumed: u16 },
    /// The rings themselves are not in guest memory (at this address,
    /// truncated to 32 bits).
    Memory { gpa: u32 },
    /// (Packed) the chain from `slot` leads to a descriptor not made
    /// available, or round the whole ring: where it ends, and so where the
    /// next one starts, cannot be known.
    BrokenChain { slot: u16 },
}

const _: () = assert!(std::mem::size_of::<Result<Pop, RingError>>() <= 8 && std::mem::size_of::<Result<crate::virtio_net::Delivery, RingError>>() <= 8);

impl From<OutOfBounds> for RingError {
    fn from(e: OutOfBounds) -> Self {
        RingError::Memory { gpa: e.gpa.0 as u32 }
    }
}
