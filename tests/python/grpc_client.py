"""A third-party gRPC client (Debian's python3-grpcio) asking a Strata agent what generic tools
ask: grpc.health.v1.Health (as Kubernetes probes and grpc_health_probe do) and server
reflection v1alpha and v1 (as grpcurl, grpcui, Postman and Evans do).

Usage: grpc_client.py MODE ADDR PROTO_DIR OUT_DIR
  MODE  "report": one JSON object with everything asked, on stdout;
        "watch": the statuses of a Watch on "" as they arrive, one per line, until it ends.
The stubs are generated at run time from the official protos in PROTO_DIR (grpc_tools.protoc)
into OUT_DIR: Debian packages no grpc_health or grpc_reflection module.
"""

import json
import sys

import grpc
from grpc_tools import protoc

PROTOS = ["health", "reflection_v1alpha", "reflection_v1"]
DEADLINE = 10


def generate(proto_dir, out_dir):
    for name in PROTOS:
        rc = protoc.main([
            "protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", f"{proto_dir}/{name}.proto",
        ])
        if rc != 0:
            sys.exit(f"grpc_tools.protoc failed on {name}.proto ({rc})")
    sys.path.insert(0, out_dir)


def status_name(health_pb2, status):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def wait_serving(channel, health_pb2, health_grpc):
    """Watches "" until SERVING: the statuses seen on the way."""
    stub = health_grpc.HealthStub(channel)
    seen = []
    stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE)
    for reply in stream:
        seen.append(status_name(health_pb2, reply.status))
        if seen[-1] == "SERVING":
            break
    stream.cancel()
    return seen


def health(channel, health_pb2, health_grpc):
    stub = health_grpc.HealthStub(channel)
    out = {"check": {}}
    for service in ["", "strata.v1.Agent"]:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE)
        out["check"][service] = status_name(health_pb2, reply.status)
    try:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=DEADLINE)
        out["unknown"] = "OK"
    except grpc.RpcError as error:
        out["unknown"] = error.code().name
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="strata.v1.Agent"), timeout=DEADLINE)
    out["watch"] = status_name(health_pb2, next(stream).status)
    stream.cancel()
    return out


def reflection(channel, pb2, pb2_grpc):
    """ListServices, then the file that defines strata.v1.Agent."""
    from google.protobuf import descriptor_pb2

    stub = pb2_grpc.ServerReflectionStub(channel)
    requests = [
        pb2.ServerReflectionRequest(list_services=""),
        pb2.ServerReflectionRequest(file_containing_symbol="strata.v1.Agent"),
    ]
    out = {}
    for reply in stub.ServerReflectionInfo(iter(requests), timeout=DEADLINE):
        kind = reply.WhichOneof("message_response")
        if kind == "list_services_response":
            out["services"] = sorted(s.name for s in reply.list_services_response.service)
        elif kind == "file_descriptor_response":
            files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                     for raw in reply.file_descriptor_response.file_descriptor_proto]
            out["agent_methods"] = sorted(
                m.name for f in files for s in f.service if s.name == "Agent" for m in s.method)
        else:
            out["error"] = str(reply)
    return out


def agent_call_without_credentials(channel):
    """strata.v1.Agent/GetNode with no token: the API layer must still decide."""
    call = channel.unary_unary("/strata.v1.Agent/GetNode")
    try:
        call(b"", timeout=DEADLINE)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def main():
    mode, addr, proto_dir, out_dir = sys.argv[1:5]
    generate(proto_dir, out_dir)
    import health_pb2
    import health_pb2_grpc
    import reflection_v1_pb2
    import reflection_v1_pb2_grpc
    import reflection_v1alpha_pb2
    import reflection_v1alpha_pb2_grpc

    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=DEADLINE)
    if mode == "watch":
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
                print(status_name(health_pb2, reply.status), flush=True)
            print("END OK", flush=True)
        except grpc.RpcError as error:
            print(f"END {error.code().name}", flush=True)
        return
    report = {
        "became_serving": wait_serving(channel, health_pb2, health_pb2_grpc),
        "health": health(channel, health_pb2, health_pb2_grpc),
        "v1alpha": reflection(channel, reflection_v1alpha_pb2, reflection_v1alpha_pb2_grpc),
        "v1": reflection(channel, reflection_v1_pb2, reflection_v1_pb2_grpc),
        "agent_without_credentials": agent_call_without_credentials(channel),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
