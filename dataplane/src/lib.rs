//! Packet processing: port → rx burst → parse → classify/learn → per-port
//! output batch → tx burst. One module per stage; `pmd_loop` ties them.
#![forbid(unsafe_code)]
pub mod burst_phases;
pub mod capture;
pub mod copy_list;
pub mod copy_once;
pub mod counters;
pub mod egress;
pub mod fdb;
pub mod flood;
pub mod flow;
pub mod fwd;
pub mod idle;
pub mod mbuf_offload;
pub mod offload;
pub mod packet;
pub mod parse;
pub mod pmd_loop;
pub mod poll_ab;
pub mod police;
pub mod port_io;
pub mod quiesce;
pub mod tag_edit;
#[cfg(test)]
mod test_rng;
pub mod virtio_net;
pub mod virtq;
pub mod vlan;
pub mod vxlan;
