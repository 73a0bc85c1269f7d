//! Generated protobuf and gRPC code for `jitid.v1` (see proto/).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// `jitid.v1`: the issuer API.
pub mod v1 {
    tonic::include_proto!("jitid.v1");
}

/// Encoded file descriptor set of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jitid_descriptor.bin"));
