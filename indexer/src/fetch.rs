//! Loading image bytes: see the `vitrine-fetch` crate.

pub use vitrine_fetch::*;
