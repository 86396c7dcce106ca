//! Poll loops on EAL worker lcores (panics caught at the boundary), and Rust
//! threads registered with the EAL.
use std::sync::Arc;

use pmd_bridge::{lcore, Eal, Mempool};
use testbed::FilePrefix;

#[test]
fn launch_register_and_panics() {
    let prefix = FilePrefix::new("lcore");
    let mut args = vec!["--lcores".to_string(), "0@0,1@0".to_string()];
    args.extend(prefix.eal_args(256));
    let eal = Eal::init(&args).expect("EAL init");
    assert_eq!(lcore::current(), Some(lcore::main_lcore()));
    assert_eq!(lcore::workers(), vec![1]);
    let pool = Arc::new(Mempool::new(&eal, "lcore_pool", 512, 32, 2048).unwrap());

    let p = Arc::clone(&pool);
    let job = lcore::launch(1, move || {
        // An lcore thread has a cache: allocation and free go through it.
        let bufs: Vec<_> = (0..64).map(|_| p.alloc().unwrap()).collect();
        assert_eq!(lcore::current(), Some(1));
        bufs.len() as i32
    })
    .unwrap();
    assert!(lcore::launch(1, || 0).is_err() || job.is_finished(), "a busy lcore refuses a second job");
    assert_eq!(job.wait().unwrap(), 64);
    assert_eq!(pool.in_use_count(), 0, "cached mbufs count as free");

    let job = lcore::launch(1, || panic!("poll loop failed")).unwrap();
    let err = job.wait().expect_err("the panic comes back to the launcher");
    assert_eq!(err.downcast_ref::<&str>(), Some(&"poll loop failed"));
    assert_eq!(lcore::launch(1, || 7).unwrap().wait().unwrap(), 7, "the lcore is usable again");

    let p = Arc::clone(&pool);
    std::thread::spawn(move || {
        assert_eq!(lcore::current(), None);
        let reg = lcore::register_thread().unwrap();
        assert!(lcore::current().is_some());
        assert!(lcore::register_thread().is_err());
        drop(p.alloc().unwrap());
        drop(reg);
        assert_eq!(lcore::current(), None);
    })
    .join()
    .unwrap();
    assert_eq!(pool.in_use_count(), 0);
}
