//! vswitchd and vswitchctl: configuration, port lifecycle, the control
//! socket and its protocol, Prometheus metrics. The data path itself is the dataplane crate.
#![forbid(unsafe_code)]
pub mod capture;
pub mod config;
pub mod ctl_server;
pub mod eal_setup;
pub mod features;
pub mod copy_once_state;
pub mod metrics;
pub mod openflow;
pub mod ports;
pub mod protocol;
pub mod switch;
