//! A bad EAL argument fails `Eal::init` with DPDK's own message, without a
//! panic. Its own process: a failed init may leave the EAL unusable.
use pmd_bridge::{Eal, Error};
use testbed::FilePrefix;

#[test]
fn bad_argument_is_an_error_with_dpdks_message() {
    let prefix = FilePrefix::new("eal-bad");
    let mut args = prefix.eal_args(256);
    args.push("--no-such-eal-option".into());
    let err = Eal::init(&args).expect_err("init must fail");
    let Error::Dpdk { call, message, .. } = &err else { panic!("unexpected error {err:?}") };
    assert_eq!(*call, "rte_eal_init");
    assert!(message.contains("no-such-eal-option"), "DPDK's message missing: {err}");
    assert!(!Eal::is_up());
}
