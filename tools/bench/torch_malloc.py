"""glibc malloc settings for the PyTorch side of the benchmarks (tools/bench/README.md, "PyTorch's allocator").

PyTorch's CPU allocator takes every tensor from malloc. With glibc's defaults a buffer larger than
the (dynamic) mmap threshold is mapped on allocation and unmapped on free, and the top of the heap
is given back to the kernel once 128 KiB are free, so a training step that frees and re-allocates
its activations and gradients page-faults its memory in again each time. Measured on the ResNet
fixture at batch 256, one thread, three processes each (BENCHMARKS.md section 0): 392-2,114 minor
faults per step, steps of 14.7-39.8 ms; with freed memory kept, 0 faults and 10.9-13.4 ms. The autoencoder's
steps do not move (its buffers stay mapped either way). OnnxKfac's steps allocate nothing (ONNX
Runtime's arena and pre-bound buffers), so PyTorch at its best keeps its freed memory too.

keep_freed_memory() must run before the first large tensor is allocated.
"""
import ctypes
import resource

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20      # glibc's largest mmap threshold on 64-bit
TRIM_THRESHOLD = (1 << 31) - 1     # mallopt takes an int: never trim below 2 GiB free


def keep_freed_memory():
    """Makes glibc keep freed memory (no mmap per buffer up to 32 MiB, no trimming); True when both settings took."""
    libc = ctypes.CDLL("libc.so.6")
    return libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def minor_faults():
    """This process's minor page faults so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
