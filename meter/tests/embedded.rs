//! The embedded store against the contract, and across a reopen.

mod support;

use tollgate_meter::embedded::EmbeddedStore;
use tollgate_meter::store::UsageStore;
use uuid::Uuid;

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-meter-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = temp_dir();
    support::check(&EmbeddedStore::open(&dir).unwrap()).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn usage_and_sequence_numbers_survive_a_reopen() {
    let dir = temp_dir();
    let c = Uuid::new_v4();
    let f = support::flush("gw", 1, vec![support::bytes(c, 0, 42, 0)]);
    {
        let store = EmbeddedStore::open(&dir).unwrap();
        assert!(store.apply(&f).await.unwrap().fresh);
    }
    let store = EmbeddedStore::open(&dir).unwrap();
    // The flush applied before the "crash" is recognised after it.
    assert!(!store.apply(&f).await.unwrap().fresh);
    assert_eq!(store.hourly(c, 0, 3600).await.unwrap()[0].bytes_in, 42);
    std::fs::remove_dir_all(dir).unwrap();
}
