//! Replays every committed input of the `spec_parse` and `config_parse` fuzz targets
//! (`fuzz/corpus/`) through the targets' own entry points, so a regression in spec or
//! config parsing fails `cargo test` on stable, without nightly or cargo-fuzz.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The fuzz crate's entry points, compiled here as they are in the fuzz targets.
#[path = "../../fuzz/src/agent.rs"]
mod harness;

use strata_tests::replay_fuzz_corpus;

#[test]
fn spec_parse_corpus_replays() {
    replay_fuzz_corpus("spec_parse", harness::spec_parse);
}

#[test]
fn config_parse_corpus_replays() {
    replay_fuzz_corpus("config_parse", harness::config_parse);
}
