//! Protobuf codegen. protox compiles the .proto files in pure Rust, so a
//! fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/repository.proto",
        "proto/version.proto",
        "proto/plugin.proto",
    ];
    for file in [
        "proto/repository.proto",
        "proto/version.proto",
        "proto/v1alpha1.proto",
        "proto/k8s.proto",
        "proto/plugin.proto",
    ] {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
