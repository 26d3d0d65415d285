//! The agent's network faces: the gRPC API (`strata.v1.Agent`, with reflection) and the
//! HTTP endpoint for Prometheus scrapes and health checks.

pub mod balancer;
pub mod gate;
pub mod grpc;
pub mod http;
