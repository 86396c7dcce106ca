//! EAL init and teardown in one process; a second init is an error.
use pmd_bridge::{Eal, Error};
use testbed::FilePrefix;

#[test]
fn init_second_init_and_cleanup() {
    let prefix = FilePrefix::new("eal");
    let eal = Eal::init(&prefix.eal_args(256)).expect("EAL init");
    assert!(Eal::is_up());
    assert_eq!(Eal::init(&prefix.eal_args(256)).err(), Some(Error::EalAlreadyInitialized));
    let clone = eal.clone();
    drop(eal);
    assert!(Eal::is_up(), "a clone keeps the EAL up");
    drop(clone);
    assert!(Eal::is_cleaned_up());
    assert_eq!(Eal::init(&prefix.eal_args(256)).err(), Some(Error::EalAlreadyInitialized));
}
