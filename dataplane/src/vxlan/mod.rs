//! VXLAN tunnel endpoints (RFC 7348): a vxlan port is a bridge port whose
//! frames travel in UDP/IPv4 over another port, its underlay.
//!
//! `wire`: the headers. `Vtep`: one endpoint's state shared by the PMD
//! threads. `rx`: what arrives on an underlay (decapsulation, ARP).
//! `tx`: encapsulation toward the remotes.
pub mod wire;
