"""The contract is language-neutral: a Python client generated from proto/ with Debian's
python3-grpcio and grpc_python_plugin streams 20 steps to gradwatchd and reads them back
through the Runs service.
"""
import queue
import sys
import tempfile
import time

import gwtest


def main():
    tmp = tempfile.mkdtemp(prefix="gradwatch-py-")
    gwtest.generate_stubs(tmp)
    import grpc
    from gradwatch.v1 import runs_pb2, runs_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

    with gwtest.Monitor() as mon:
        channel = grpc.insecure_channel(mon.address)
        telemetry = telemetry_pb2_grpc.TelemetryStub(channel)
        outgoing = queue.Queue()
        layers = ["fc1.weight", "fc1.bias", "fc2.weight"]
        hello = telemetry_pb2.Hello(run_id="python-client", layer_names=layers,
                                    mode=telemetry_pb2.MODE_OBSERVE,
                                    config=telemetry_pb2.RunConfig(model="mlp", total_steps=20))
        outgoing.put(telemetry_pb2.TrainerMessage(hello=hello))
        for step in range(1, 21):
            report = telemetry_pb2.StepReport(step=step, loss=1.0 / step, grad_norm=0.1 * step,
                                              layer_grad_norms=[0.1, 0.2, 0.3 * step],
                                              learning_rate=0.01, jaccard_soft=0.5)
            outgoing.put(telemetry_pb2.TrainerMessage(step=report))

        def requests():
            while True:
                item = outgoing.get()
                if item is None:
                    return
                yield item

        stored = 0
        for reply in telemetry.Stream(requests(), timeout=30):
            if reply.HasField("ack"):
                stored = reply.ack.stored_through_step
                if stored >= 20:
                    # The run is over: say goodbye, then half-close (without the goodbye
                    # the monitor takes the close for a broken stream).
                    outgoing.put(telemetry_pb2.TrainerMessage(goodbye=telemetry_pb2.Goodbye(last_step=20)))
                    outgoing.put(None)
            assert not reply.HasField("rejection"), reply.rejection.reason
        assert stored == 20, f"monitor acknowledged through step {stored}, expected 20"

        runs = runs_pb2_grpc.RunsStub(channel)
        steps = runs.ListSteps(runs_pb2.ListStepsRequest(run_id="python-client")).steps
        assert [s.step for s in steps] == list(range(1, 21)), [s.step for s in steps]
        assert abs(steps[4].loss - 0.2) < 1e-12, steps[4].loss
        assert abs(steps[19].layer_grad_norms[2] - 6.0) < 1e-5, steps[19].layer_grad_norms
        deadline = time.monotonic() + 10  # the monitor sees the stream end a moment after us
        while True:
            run = runs.GetRun(runs_pb2.GetRunRequest(run_id="python-client"))
            if run.state == runs_pb2.RUN_STATE_FINISHED or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert run.steps == 20 and list(run.layer_names) == layers, run
        assert run.state == runs_pb2.RUN_STATE_FINISHED, run.state
        try:
            runs.GetRun(runs_pb2.GetRunRequest(run_id="nope"))
            raise AssertionError("GetRun of an unknown run succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("python client: 20 steps streamed and read back")


if __name__ == "__main__":
    sys.exit(main())
