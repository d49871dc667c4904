"""gradwatch's v1 contract (proto/gradwatch/v1) as generated Python modules: telemetry_pb2,
runs_pb2, jobs_pb2 and their *_pb2_grpc stubs. See gradwatch/_stubs.py for where they come from."""
from gradwatch import _stubs

_stubs.extend_path(__path__)
