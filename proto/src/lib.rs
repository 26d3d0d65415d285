//! The wire contract between Strata agents and the console: generated gRPC types and
//! the encoded file descriptor set that serves gRPC reflection.

/// Version 1 of the Strata API (`strata.v1`).
pub mod v1 {
    tonic::include_proto!("strata.v1");

    /// The encoded descriptors of every `strata.v1` message and service, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("strata_v1_descriptor");
}

pub mod ext;
