//! No build step. `ime-disk`'s build-dependencies exist only to pin the features of host
//! crates that RocksDB's bindings generator shares with the rest of the workspace (see
//! `Cargo.toml`), so that RocksDB's build script — and its C++ — compile once per profile
//! whatever command comes first.

fn main() {}
