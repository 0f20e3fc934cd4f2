"""Melanoma classifier: dermoscopy image -> calibrated probability of malignancy, with Grad-CAM."""

__version__ = "0.1.0"


def keep_freed_memory_in_the_heap() -> None:
    """glibc returns large freed blocks (a network's activations) to the OS and page-faults them in
    again at the next allocation, which on small machines can take much of the run time; threads
    other than the main one get heaps of their own (arenas) where these settings do not help, hence
    one heap for all (M_ARENA_MAX 1). Same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1GiB
    MALLOC_ARENA_MAX=1 (MALLOC_ENVIRONMENT below, for processes such as the page's server that start
    threads before this runs); freed memory is kept for reuse instead.
    Does nothing off glibc. Process-wide, so the CLI calls it (`cli.main`), never `import melanoma`."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


MALLOC_ENVIRONMENT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_ARENA_MAX": "1"}
