//! Compiles `proto/strata/v1/*.proto` with a vendored protoc, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["proto/strata/v1/agent.proto"];
    let mut prost_config = prost_build::Config::new();
    prost_config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("strata_v1_descriptor.bin"))
        .type_attribute(
            ".strata.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".strata.v1", "#[serde(default)]")
        .field_attribute(
            ".strata.v1.Event.severity",
            "#[serde(with = \"crate::severity_serde\")]",
        )
        .field_attribute(
            ".strata.v1.QueryEventsRequest.min_severity",
            "#[serde(with = \"crate::severity_serde\")]",
        )
        .field_attribute(
            ".strata.v1.WatchEventsRequest.min_severity",
            "#[serde(with = \"crate::severity_serde\")]",
        )
        .compile_with_config(prost_config, &protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
