"""Tensor + data parallelism on torch.distributed (docs/paper.md section 4). Everything that touches a process group
lives here; nemotron4.model stays plain nn.Modules.

    layout.py       the [parallel] section, ParallelDims (validated against the world size), check_tp: plain values
    mesh.py         the process group and the ("dp", "tp") DeviceMesh
    parallelize.py  the TP plan (dicts keyed by module name), FSDP2 over dp, sharded init equal to one process's
    step.py         StepHooks: loss_parallel, FSDP2 gradient sync, full-model grad norm, loss mean over dp
    runtime.py      Parallel: what the trainer holds (build the model, rank-0 writes, barriers)
    plan.py         memory per GPU and time to train, for `nemotron4 plan` (pure arithmetic, no process group)

Modules are imported on use: `import nemotron4.distributed` alone pulls in nothing heavy.
"""
