//! The only crate that talks to DPDK's C API.
//!
//! `ffi` holds the generated bindings; everything else is a small safe type
//! over them, and the rest of the workspace uses only those types.
pub mod burst;
pub mod cycles;
pub mod dma;
pub mod eal;
pub mod eventfd;
pub mod error;
pub mod ethdev;
pub mod extbuf;
pub mod ffi;
pub mod gso;
pub mod guest_mem;
mod guest_words;
pub mod lcore;
pub mod lend_map;
pub mod log;
pub mod mbuf;
pub mod mempool;
pub mod persist;
pub mod ring;
pub mod sys;
pub mod vhost;

pub use burst::{Burst, Drain, BURST};
pub use eal::Eal;
pub use error::{Error, Result};
pub use gso::{segment_tcp4, GsoError};
pub use ethdev::{EthPort, Link, PortConfig, PortStats, RxQueue, TxOffloadCaps, TxQueue};
pub use mbuf::{tx_flags, Mbuf, TxOffload};
pub use mempool::{Mempool, Stock};
pub use ring::Ring;
pub use vhost::{CallFd, VhostDevice, VhostEvent, VhostMode, VhostRxQueue, VhostSocket, VhostTxQueue};
