"""Where CPython keeps what the frame walk reads, per minor version (x86-64, GIL builds).

Stable within a minor version, different across them; the test compiles a probe against
each CPython's own headers found on the machine and checks every number here. 3.13+ also
carry them in the file (`_Py_DebugOffsets`), which detect.py checks the version of."""

from __future__ import annotations

from dataclasses import dataclass

NONE = -1   # a field this version does not have


@dataclass(frozen=True)
class Layout:
    runtime_interpreters_head: int    # _PyRuntimeState.interpreters.head
    interp_threads_head: int          # PyInterpreterState: the first PyThreadState
    tstate_next: int
    tstate_thread_id: int             # pthread_self() of the thread: its fs base on x86-64
    tstate_native_thread_id: int      # the kernel's tid (3.11+)
    tstate_frame: int                 # 3.10: PyFrameObject *frame; 3.11/3.12: _PyCFrame *cframe;
                                      # 3.13: _PyInterpreterFrame *current_frame
    cframe_current_frame: int         # 3.11/3.12: _PyCFrame.current_frame
    frame_previous: int
    frame_code: int                   # the code object (3.13: f_executable, maybe not code)
    frame_instr: int                  # 3.10: int f_lasti (code units); 3.11+: the instruction pointer
    frame_owner: int                  # 3.11+: who owns the frame (3: the C stack's shim, 3.12+)
    frame_is_entry: int               # 3.11: the frame an eval call began with
    code_filename: int
    code_name: int
    code_qualname: int                # 3.11+ (3.10: co_name stands in)
    code_bytecode: int                # 3.10: PyBytesObject *co_code; 3.11+: co_code_adaptive, inline
    code_firstlineno: int
    code_linetable: int               # a PyBytesObject *
    unicode_ascii_data: int           # sizeof(PyASCIIObject): a compact ASCII string's characters
    unicode_state: int
    bytes_size: int
    bytes_data: int


LAYOUTS: dict[tuple[int, int], Layout] = {
    (3, 10): Layout(32, 8, 8, 176, NONE, 24, NONE, 24, 32, 96, NONE, NONE,
                    104, 112, NONE, 48, 40, 120, 48, 32, 16, 32),
    (3, 11): Layout(40, 16, 8, 152, 160, 56, 8, 48, 32, 56, 69, 68,
                    112, 120, 128, 184, 72, 136, 48, 32, 16, 32),
    (3, 12): Layout(40, 72, 8, 136, 144, 56, 0, 8, 0, 56, 70, NONE,
                    112, 120, 128, 192, 68, 136, 40, 32, 16, 32),
    (3, 13): Layout(632, 7344, 8, 152, 160, 72, NONE, 8, 0, 56, 70, NONE,
                    112, 120, 128, 200, 68, 136, 40, 32, 16, 32),
}
