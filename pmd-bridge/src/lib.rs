//! The only crate that talks to DPDK's C API.
//!
//! `ffi` holds the generated bindings; everything else is a small safe type
//! over them, and the rest of the workspace uses only those types.
pub mod eal;
pub mod error;
pub mod ffi;
pub mod log;

pub use eal::Eal;
pub use error::{Error, Result};
