//! One EAL per test process, shared by the tests in a binary (cargo test runs
//! them in one process; nextest runs each in its own, which also works).
#![allow(dead_code)]
use std::sync::OnceLock;

use pmd_bridge::{Eal, Mempool};
use testbed::FilePrefix;

pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = FilePrefix::for_process("bridge");
        pmd_bridge::log::set_echo(std::env::var_os("VSW_TEST_VERBOSE").is_some());
        Eal::init(&prefix.eal_args(512)).expect("EAL init")
    })
}

/// A pool private to one test, so its free count says what that test leaked.
pub fn pool(name: &str, n: u32) -> Mempool {
    Mempool::new(eal(), name, n, 0, 2048).expect("mempool")
}

/// A frame whose bytes depend on `seq`, so every frame differs.
pub fn frame(seq: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq.wrapping_mul(7)) as u8).collect()
}
