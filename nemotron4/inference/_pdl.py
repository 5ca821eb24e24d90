"""Programmatic dependent launch inside Triton kernels: `gdc_wait` (wait for the kernel before) and
`gdc_launch_dependents` (let the next kernel start), no-ops on a Triton that lacks them (PDL then stays off:
triton_linear.launch). Imported lazily by the decode kernels: the CPU path never needs Triton."""

import triton

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_PDL = True
except ImportError:  # an older Triton: triton_linear.pdl_enabled is then False
    HAS_PDL = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass

__all__ = ["HAS_PDL", "gdc_launch_dependents", "gdc_wait"]
