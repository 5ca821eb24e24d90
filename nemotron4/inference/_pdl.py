"""Programmatic dependent launch inside Triton kernels: `gdc_wait` (wait for the kernel before) and
`gdc_launch_dependents` (let the next kernel start), and `pdl_wait`, the two in the order a kernel asks for;
no-ops on a Triton that lacks them (PDL then stays off:
triton_linear.launch). Imported lazily by the decode kernels: the CPU path never needs Triton."""

import triton
import triton.language as tl

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


@triton.jit
def pdl_wait(USE_PDL: tl.constexpr, EARLY_LAUNCH: tl.constexpr):
    """Wait for the kernel before; let the next one launch: before the wait with EARLY_LAUNCH (for a small kernel
    whose successor loads only weights before its own wait: the successor's programs become resident and start
    those loads while this kernel and the one before run), after it otherwise."""
    if USE_PDL:
        if EARLY_LAUNCH:
            gdc_launch_dependents()
        gdc_wait()
        if not EARLY_LAUNCH:
            gdc_launch_dependents()


__all__ = ["HAS_PDL", "gdc_launch_dependents", "gdc_wait", "pdl_wait"]
