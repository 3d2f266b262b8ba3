//! Replays the committed `config` fuzz corpus (`fuzz/corpus/config`) through the driver the
//! `config` fuzz target uses: parsing never panics, and an accepted config serves every hub.

#[path = "../../fuzz/drivers/config.rs"]
mod config;
#[path = "../../fuzz/drivers/corpus.rs"]
mod corpus;

#[test]
fn config_corpus_never_panics() {
    corpus::replay("config", config::run);
}
