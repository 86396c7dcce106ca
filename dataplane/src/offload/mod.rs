//! Checksum and TCP segmentation offloads between guests and NICs.
//!
//! A guest's transmitted frame comes with a virtio-net header asking the
//! device to finish its L4 checksum (NEEDS_CSUM) and maybe to cut it into
//! TCP segments (GSO). The switch checks that header once, against its own
//! copy of the frame's first bytes (`validate`), and keeps the result as
//! an [`Offload`]: an output that takes those offloads gets the frame whole
//! with `Offload::to_hdr`; for one that does not, the checksum is finished
//! (`csum::complete_partial`) or the frame cut (`seg::Segmenter`) here.
//!
//! Pure logic over byte slices: where the bytes live is the caller's.
pub mod csum;
pub mod hdr;
pub mod seg;
pub mod validate;

#[cfg(test)]
pub(crate) mod testutil;

pub use csum::{complete_partial, finish, Checksum, WordSum};
pub use hdr::*;
pub use seg::{Segmenter, MAX_HDR};
pub use validate::{validate, HdrError, MAX_FRAME, MIN_MSS};
