//! Loading image bytes lives in `vitrine-fetch`, with every rule about what may be loaded;
//! re-exported here so `vitrine_indexer::fetch::*` keeps working.

pub use vitrine_fetch::{
    check_url, is_public, is_url, Blame, FetchError, FetchOptions, Fetcher, LocalFiles, NetworkFailure, Source,
};
