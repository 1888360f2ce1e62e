//! Compiles Annals' own KurrentDB-protocol `.proto` files with the pure-Rust `protox` (no
//! `protoc` needed) and generates the tonic server stubs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kurrent/shared.proto",
        "proto/kurrent/status.proto",
        "proto/kurrent/streams.proto",
        "proto/kurrent/serverfeatures.proto",
        "proto/kurrent/gossip.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
