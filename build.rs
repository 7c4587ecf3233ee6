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

    // OTLP trace export (src/otlp): the client for the exporter, the server
    // for the fake collector of tests/otlp.rs. Its own include root, so
    // the imports read as in the OpenTelemetry specification.
    let otlp = [
        "proto/otlp/opentelemetry/proto/collector/trace/v1/trace_service.proto",
        "proto/otlp/opentelemetry/proto/trace/v1/trace.proto",
        "proto/otlp/opentelemetry/proto/resource/v1/resource.proto",
        "proto/otlp/opentelemetry/proto/common/v1/common.proto",
    ];
    for file in otlp {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile([otlp[0]], ["proto/otlp"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
