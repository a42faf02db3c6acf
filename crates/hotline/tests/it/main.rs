//! Hotline's integration tests, in one binary: each file here was once a
//! test binary of its own, and each linked the server's crates and
//! `matrix-sdk` again, which on two cores cost more than running them.
//! Run one file's tests with `cargo test --release -p hotline --test it FILE::`.

#![recursion_limit = "256"]

mod common;
#[path = "common/sdk.rs"]
mod sdk;

mod archiver;
mod availability;
mod backup;
mod cli;
mod contact_log;
mod crash;
mod endpoints_more;
mod errors;
mod federation;
mod federation_interop;
mod federation_officials;
mod fuzz_bodies;
mod history_visibility;
mod identity_lines;
mod js_interop;
mod keys_rules;
mod line_aides;
mod line_invite_preview;
mod line_record;
mod media_thumbnails;
mod migrate;
mod multi_process;
mod pushers;
mod receipts;
mod released_clients;
mod room_rules;
mod sdk_conversation;
mod sdk_e2ee;
mod security_abuse;
mod security_disk;
mod security_lines;
mod security_names;
mod security_reads;
mod send_txn;
mod sliding_sync;
mod sync_filters;
mod trace;
mod turn;
mod web_push;
