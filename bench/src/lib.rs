//! vswitch-bench: a traffic generator and sink on DPDK, and a harness that
//! drives vswitchd, OVS-DPDK and testpmd through the same topology.
#![forbid(unsafe_code)]
pub mod frame;
pub mod gen;
pub mod guests;
pub mod harness;
pub mod idle;
pub mod peers;
pub mod plot;
pub mod probe;
pub mod report;
pub mod sink;
pub mod size;
pub mod tunnel;
