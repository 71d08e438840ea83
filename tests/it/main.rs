//! Workspace-level integration tests, built into one binary to save link time.
//! They run on the committed tiny random-weight CLIP (`models/tiny-clip`) and the demo catalog.

mod backends;
mod cli;
mod common;
mod compat;
mod config;
mod fetch;
mod fuzz;
mod http;
mod index;
mod lock;
mod media;
mod openapi;
mod parity;
mod relevance;
mod service;
mod shop;
mod siglip;
mod snapshot;
mod tagging;
mod upload;
mod variants;
