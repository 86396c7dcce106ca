//! Generates the DPDK bindings against the installed libdpdk (pkg-config) and
//! compiles the wrappers of DPDK's `static inline` fast-path functions with
//! exactly the cflags DPDK asks for (`-include rte_config.h -march=...`).
use std::env;
use std::path::PathBuf;

fn main() {
    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("libdpdk (DPDK 22.11) not found through pkg-config: {e}\n\
                    install it with `make deps` (apt-get install libdpdk-dev)")
        });
    let cflags = pkg_config_cflags();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let wrapped = out.join("static_fns");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .header("src/shim.h")
        .clang_args(&cflags)
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("(rte|vsw)_.*")
        .allowlist_type("(rte|vhost|vring|virtio)_.*")
        .allowlist_var("(RTE|VIRTIO|VRING|VHOST|SOCKET_ID|RING_F)_.*")
        // Packed structs holding aligned ones (E0588) on bindgen 0.72: verified
        // on these machines, see shared/docs/dpdk-notes.md.
        .opaque_type("rte_gtp_psc_.*")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .clang_macro_fallback()
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrapped)
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on the DPDK headers");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(wrapped.with_extension("c"))
        .file("src/shim.c")
        .include(env::var("CARGO_MANIFEST_DIR").unwrap())
        .define("ALLOW_EXPERIMENTAL_API", None)
        .flag("-Wno-deprecated-declarations")
        .warnings(false)
        .opt_level(3);
    for inc in &dpdk.include_paths {
        build.include(inc);
    }
    for flag in cflags.iter().filter(|f| !f.starts_with("-I")) {
        build.flag(flag);
    }
    build.compile("pmd_bridge_shim");
    // rte_eth_from_rings lives in the net_ring PMD, which pkg-config does not
    // list; it is the same file the EAL loads from its driver directory.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
}

/// The cflags exactly as pkg-config prints them; the `-include rte_config.h`
/// pair must stay together, so split on whitespace without reordering.
fn pkg_config_cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config");
    assert!(out.status.success(), "pkg-config --cflags libdpdk failed");
    String::from_utf8(out.stdout)
        .expect("utf-8 cflags")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
