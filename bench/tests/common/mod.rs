//! One generator (EAL) per test binary, and the setup every switch gets.
#![allow(dead_code)]
use std::path::PathBuf;
use std::sync::OnceLock;

use bench::gen::Generator;
use bench::peers::Setup;
use testbed::FilePrefix;

pub fn generator() -> &'static Generator {
    static GEN: OnceLock<Generator> = OnceLock::new();
    GEN.get_or_init(|| {
        let prefix = FilePrefix::for_process("bench-gen");
        Generator::init(0, false, prefix.as_str()).expect("generator EAL")
    })
}

pub fn setup() -> Setup {
    Setup {
        pmd_core: 1,
        main_core: 0,
        hugepages: false,
        memory_mb: 1024,
        vhost_retries: 8,
        mac_table_size: 4096,
        vswitchd: PathBuf::from(env!("CARGO_BIN_EXE_vswitch-bench")).with_file_name("vswitchd"),
        offloads: true,
    }
}
