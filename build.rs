//! Compiles the examples' proto (examples/proto) with protox (a pure-Rust
//! protobuf compiler), so a build needs no system protoc. jitid's own API
//! (proto/) is compiled by the client crate (client/build.rs) and shared
//! from there.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The examples' own service (examples/svid_server.rs, svid_client.rs).
    let greeter = "examples/proto/greeter.proto";
    println!("cargo:rerun-if-changed={greeter}");
    tonic_prost_build::configure().compile_fds(protox::compile([greeter], ["examples/proto"])?)?;
    Ok(())
}
