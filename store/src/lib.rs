//! The storage and index stage: the product store on sled ([`store`]), index generations built
//! from it and opened by readers ([`generation`]), the vector segments ([`vectors`]) with their
//! HNSW graph (built by [`hnsw`], searched by [`graph`]), their f32 vectors mapped from disk
//! ([`vecfile`]), the 8-bit codes the graph walk scores ([`sq8`]) with kernels chosen for the CPU
//! at run time ([`simd`]), the tantivy keyword index ([`keyword`]), and the data directory's
//! single-writer lock ([`lock`]).
//!
//! It never runs a model: vectors come in from the indexer (which runs `vitrine-model`) and are
//! only stored, indexed and scored here. A generation is immutable once published; readers swap
//! to a newer one and never go back.

pub mod generation;
pub mod graph;
pub mod hnsw;
pub mod keyword;
pub mod lock;
pub mod simd;
pub mod sq8;
pub mod store;
pub mod vecfile;
pub mod vectors;
