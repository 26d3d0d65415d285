//! Replays every committed input of the `gossip_packet` and `catalog_record` fuzz targets
//! (`fuzz/corpus/`) through the targets' own entry points, so a regression in packet or
//! record decoding fails `cargo test` on stable, without nightly or cargo-fuzz.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The fuzz crate's entry points, compiled here as they are in the fuzz targets; the seed
// generator's helpers are unused in this test.
#[allow(dead_code)]
#[path = "../../fuzz/src/registry.rs"]
mod harness;

use strata_tests::replay_fuzz_corpus;

#[test]
fn gossip_packet_corpus_replays() {
    replay_fuzz_corpus("gossip_packet", harness::gossip_packet);
}

#[test]
fn catalog_record_corpus_replays() {
    replay_fuzz_corpus("catalog_record", harness::catalog_record);
}
