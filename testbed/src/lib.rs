//! Test harness shared by every scenario test in the workspace.
//!
//! Scenario tests start DPDK processes and QEMU guests. Each helper here owns
//! what it starts and removes it on drop, so a failing (panicking) test still
//! leaves no process, socket or hugepage file behind; and every wait has a
//! deadline, never a fixed sleep.
pub mod deadline;
pub mod dpdk;
pub mod guest;
pub mod proc;

pub use deadline::wait_until;
pub use dpdk::FilePrefix;
pub use guest::{Guest, GuestImage, GuestNet, SocketRole};
pub use proc::Proc;

/// The workspace's `target/` directory (or `CARGO_TARGET_DIR`), where caches live.
pub fn target_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}
