//! Replays every committed input of the `gossip_packet` and `catalog_record` fuzz targets
//! (`fuzz/corpus/`) through the targets' own entry points, so a regression in packet or
//! record decoding fails `cargo test` on stable, without nightly or cargo-fuzz.

// The fuzz crate's entry points, compiled here as they are in the fuzz targets; the seed
// generator's helpers are unused in this test.
#[allow(dead_code)]
#[path = "../../fuzz/src/registry.rs"]
mod harness;

use std::path::PathBuf;

/// Every file of `fuzz/corpus/<target>/`, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} panics on {}", path.display());
    }
}

#[test]
fn gossip_packet_corpus_replays() {
    replay("gossip_packet", harness::gossip_packet);
}

#[test]
fn catalog_record_corpus_replays() {
    replay("catalog_record", harness::catalog_record);
}
