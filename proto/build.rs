//! Compiles `proto/strata/v1/*.proto` with a vendored protoc, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["proto/strata/v1/agent.proto"];
    // Enum fields are i32 in the generated structs; in JSON they are words.
    let enum_fields = [
        ("Event.severity", "severity"),
        ("QueryEventsRequest.min_severity", "severity"),
        ("WatchEventsRequest.min_severity", "severity"),
        ("InstanceStatus.state", "instance_state"),
        ("InstanceStatus.health", "health"),
        ("CatalogInstance.state", "instance_state"),
        ("CatalogInstance.health", "health"),
        ("CatalogService.algorithm", "algorithm"),
        ("Member.status", "member_status"),
        ("ApplySpecReply.action", "apply_action"),
        ("ControlServiceRequest.SendSignal.signal", "signal"),
        ("LogLine.stream", "log_stream"),
        ("ClusterUpdate.kind", "cluster_update_kind"),
        ("KeyringRequest.op", "keyring_op"),
        ("BalancerService.algorithm", "algorithm"),
        ("BalancerListener.state", "listener_state"),
        ("AccessRecord.outcome", "access_outcome"),
        ("WhoAmIReply.role", "role"),
        ("WhoAmIReply.via", "via"),
        ("ClusterToken.role", "role"),
        ("CreateTokenRequest.role", "role"),
    ];
    let mut prost_config = prost_build::Config::new();
    prost_config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let mut builder = tonic_prost_build::configure();
    for (field, words) in enum_fields {
        builder = builder.field_attribute(
            format!(".strata.v1.{field}"),
            format!("#[serde(with = \"crate::ext::{words}\")]"),
        );
    }
    builder
        .file_descriptor_set_path(out_dir.join("strata_v1_descriptor.bin"))
        .type_attribute(
            ".strata.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".strata.v1", "#[serde(default)]")
        .compile_with_config(prost_config, &protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
