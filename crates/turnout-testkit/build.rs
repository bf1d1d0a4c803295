//! Compiles the test gRPC service (proto/echo.proto) with protoc, for the grpc module.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
