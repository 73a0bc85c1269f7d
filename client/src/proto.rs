//! Generated protobuf and gRPC code for `jitid.v1` (see proto/).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// `jitid.v1`: the issuer API.
pub mod v1 {
    tonic::include_proto!("jitid.v1");
}

/// The trailer of a request the server shed under load (RESOURCE_EXHAUSTED
/// before any work): how many milliseconds to wait before retrying, as in
/// gRPC's retry design (A6).
pub const RETRY_PUSHBACK_TRAILER: &str = "grpc-retry-pushback-ms";

/// Encoded file descriptor set of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jitid_descriptor.bin"));
