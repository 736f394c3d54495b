"""What a generated program may import and touch: the static checker's allowlists and its
named refusals, each with the reason it stays refused.

Loosening any rule here needs its threat argument in a comment and a hostile program in
`tests/sandbox/hostile/` that tries to misuse what was allowed.
"""

from __future__ import annotations

import re

# Pure standard-library modules: every public non-module attribute is allowed, except the
# named risks in FORBIDDEN_ATTRS (attrgetter, methodcaller, singledispatch, get_type_hints,
# ForwardRef: getattr or eval in disguise). Modules they re-export (`enum.bltns` is
# builtins, `dataclasses.types`'s CodeType) stay refused by the module rules.
PURE_MODULES = frozenset(
    {
        "math",
        # re: patterns match strings; a pathological one burns only the worker's CPU limit
        "re",
        "random",
        "typing",
        "collections",
        "collections.abc",
        "functools",
        "dataclasses",
        "itertools",
        "operator",
        "numbers",
        "abc",
        "enum",
    }
)
# Modules a program may import (these names, plus the allowlisted torch submodules below).
ALLOWED_IMPORTS = PURE_MODULES | {
    "__future__",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.nn.init",
    "torch.nn.utils",
    "torch.nn.utils.parametrize",
    "torch.nn.utils.parametrizations",
    "torch.nn.utils.spectral_norm",
    "torch.nn.parameter",
    "torch.nn.modules",
    # nn.DataParallel is already reachable as torch.nn.DataParallel; without
    # torch.distributed (refused) DistributedDataParallel cannot join a process group.
    "torch.nn.parallel",
    # LEMUR programs set up their own optimiser and scheduler (train_setup/learn)
    "torch.optim",
    "torch.optim.lr_scheduler",
    # checkpoint(fn, *args) recomputes fn in the backward pass: the program's own code,
    # nothing outside the process.
    "torch.utils.checkpoint",
    # numpy: numerics on arrays in the worker; its file, memory-map and native entry
    # points are NUMPY_RISKS below, its submodules other than these are refused.
    "numpy",
    "numpy.random",
    "numpy.linalg",
    "numpy.fft",
    # gc: only gc.collect (MODULE_ATTR_ALLOWLIST), the rest hands out live objects.
    "gc",
    # types: only type objects for isinstance (MODULE_ATTR_ALLOWLIST), no CodeType.
    "types",
}
# Modules of which only these attributes may be used: gc.get_objects, get_referrers and
# get_referents return any live object of the process (a module the program may not
# import, the sandbox's own frames); gc.collect only runs the cycle collector.
# torch.jit: only what marks or asks, never what compiles, loads or saves (script, trace,
# load, save stay refused; TorchScript reads source files and writes archives).
MODULE_ATTR_ALLOWLIST = {
    "gc": frozenset({"collect"}),
    "torch.jit": frozenset({"is_scripting", "is_tracing", "unused", "ignore", "annotate", "Final"}),
    # types: the type objects isinstance() asks about; CodeType (raw bytecode) stays refused,
    # and without it (and without __code__) FunctionType has no code object to wrap.
    "types": frozenset(
        {
            "FunctionType",
            "LambdaType",
            "MethodType",
            "BuiltinFunctionType",
            "BuiltinMethodType",
            "GeneratorType",
            "SimpleNamespace",
            "MappingProxyType",
            "NoneType",
            "GenericAlias",
            "UnionType",
        }
    ),
}
# FORBIDDEN_ATTRS names refused anywhere, except reached as `module.name` on these modules:
# `compile` is refused for torch.compile and the builtin; re.compile compiles a regex.
# `jit` is refused as an attribute of anything but torch (then MODULE_ATTR_ALLOWLIST).
CHAIN_ATTR_EXCEPTIONS = {"re": frozenset({"compile"}), "torch": frozenset({"jit"})}
# Library settings a program may assign: its own process's speed/determinism switches.
ALLOWED_LIBRARY_SETTINGS = frozenset(
    {
        "torch.backends.cudnn.benchmark",
        "torch.backends.cudnn.deterministic",
        "torch.backends.cudnn.allow_tf32",
        "torch.backends.cuda.matmul.allow_tf32",
    }
)
# Refused modules that an import may still name when the program never reads the name:
# they are loaded in every interpreter already (importing runs nothing) and the binding is
# unreachable (globals, vars, __dict__ and sys.modules are refused). LEMUR's FractalNets
# start with an unused `import os`.
DORMANT_IMPORTS = frozenset({"os", "sys", "time", "warnings", "copy", "traceback"})
# numpy's ways out of the array world: files (loadtxt, savetxt, genfromtxt, fromregex,
# savez, memmap, DataSource), source and documentation lookups that read files (info,
# source, lookfor), build and configuration introspection. load/save/fromfile/tofile/
# ctypes/dump are refused everywhere (FORBIDDEN_ATTRS). `np.ndarray(buffer=..., strides=...)`
# can read out of bounds like `torch.as_strided` can: inside the worker only (residual
# risk of the sandbox, which confines it).
NUMPY_RISKS = frozenset(
    {
        "loadtxt",
        "savetxt",
        "genfromtxt",
        "fromregex",
        "savez",
        "savez_compressed",
        "memmap",
        "DataSource",
        "info",
        "source",
        "lookfor",
        "show_config",
        "show_runtime",
        "get_include",
        "recfromcsv",
        "recfromtxt",
    }
)
# Why a module that programs ask for stays refused (the rejection says it).
REFUSED_IMPORT_REASONS = {
    "os": "it reaches files, processes and the environment",
    "sys": "it reaches the interpreter's modules and streams",
    "subprocess": "it starts processes",
    "socket": "it opens network connections",
    "shutil": "it copies and deletes files",
    "pathlib": "it reads and writes files",
    "io": "it opens files",
    "tempfile": "it creates files",
    "pickle": "unpickling runs arbitrary code",
    "importlib": "it imports any module",
    "ctypes": "it calls native code",
    "multiprocessing": "it starts processes",
    "threading": "threads outlive the sandbox's accounting of the program",
    "torchvision": "its models and datasets download weights and read files; write the "
    "layers with torch.nn",
    "torch.utils.data": "data loading is the trainer's job (the sandbox hands the program "
    "its batches)",
    "timm": "a third-party model zoo, not installed in the sandbox",
    "einops": "a third-party package, not installed in the sandbox; use tensor.view/permute",
    "requests": "it reaches the network",
    "urllib": "it reaches the network",
}
# Modules an attribute chain may pass through (imports plus the submodules that pure
# layer code reaches, e.g. `nn.modules.conv.Conv2d`, `torch.linalg.norm`).
ALLOWED_MODULE_PREFIXES = (
    "torch.nn.modules",
    "torch.nn.utils",
    "torch.optim.",
)
# torch.cuda and torch.amp: LEMUR's trainers ask `torch.cuda.is_available()`, empty the
# cache and build a GradScaler; their private parts (`_x`) stay refused like all others.
ALLOWED_CHAIN_MODULES = (ALLOWED_IMPORTS - {"__future__"}) | {
    "torch.jit",
    "torch.backends",
    "torch.backends.cudnn",
    "torch.cuda.amp",
    "torch.linalg",
    "torch.fft",
    "torch.special",
    "torch.cuda",
    "torch.amp",
}
# Where an object reached through a module chain may be defined (its `__module__`).
ALLOWED_OBJECT_MODULES = ALLOWED_CHAIN_MODULES | {
    "torch.functional",
    "torch.random",
    "torch.types",
    "torch.autograd.grad_mode",
    "torch.amp.autocast_mode",
    "torch._tensor",
    "torch._linalg_utils",
    "torch._lowrank",
    "builtins",
}
ALLOWED_OBJECT_PREFIXES = (
    "numpy",
    "torch.nn.",
    "torch._C",
    "torch.optim.",
    "torch.amp.",
    "torch.cuda.amp.",
    "torch.cuda.memory",
    "collections.",
    "typing",
)

FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "open",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "exit",
        "quit",
        "help",
        "memoryview",
        "__import__",
        "__builtins__",
        "__loader__",
        "__spec__",
    }
)
# Attributes refused wherever they appear, by what they would reach (the rejection says it).
FORBIDDEN_ATTR_GROUPS: dict[str, tuple[str, ...]] = {
    # modules that torch (or typing, dataclasses, ...) re-exports as attributes
    "a module that reaches the interpreter, files, processes or the network": (
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "ctypes",
        "socket",
        "shutil",
        "pickle",
        "marshal",
        "io",
        "pathlib",
        "signal",
        "threading",
        "multiprocessing",
        "inspect",
        "gc",
        "resource",
        "mmap",
        "tempfile",
        "distributed",
        "profiler",
        "onnx",
        "package",
        "serialization",
        "hub",
        "ops",
        "classes",
        "library",
        "jit",
        "cpp_extension",
    ),
    # processes, environment, files
    "it reaches processes, the environment or files": (
        "system",
        "popen",
        "fork",
        "forkpty",
        "kill",
        "killpg",
        "environ",
        "getenv",
        "putenv",
        "unsetenv",
        "remove",
        "unlink",
        "rmdir",
        "removedirs",
        "rename",
        "chdir",
        "chmod",
        "chown",
        "mkdir",
        "makedirs",
        "listdir",
        "scandir",
        "walk",
        "symlink",
        "open",
        "read_text",
        "write_text",
        "read_bytes",
        "write_bytes",
        "execl",
        "execle",
        "execlp",
        "execv",
        "execve",
        "execvp",
        "execvpe",
        "spawnl",
        "spawnv",
        "spawnve",
        "posix_spawn",
        "exec_module",
    ),
    # (un)pickling, file-backed tensors, native code, compilation, threads
    "it (un)pickles, maps files, loads native code, compiles or changes the thread count": (
        "load",
        "loads",
        "save",
        "dump",
        "dumps",
        "from_file",
        "fromfile",
        "tofile",
        "load_library",
        "load_inline",
        "import_ir_module",
        "import_ir_module_from_buffer",
        "compile",
        "set_num_threads",
        "set_num_interop_threads",
        "export_chrome_trace",
    ),
    # frame and code objects
    "frames and code objects reach the interpreter's internals": (
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "ag_frame",
        "tb_frame",
        "tb_next",
        "co_code",
    ),
    # getattr in disguise, and annotation strings evaluated as code
    "it looks attributes up by string or evaluates annotation strings as code": (
        "attrgetter",
        "methodcaller",
        "get_type_hints",
        "ForwardRef",
        "evaluate_forward_ref",
        "singledispatch",
        "singledispatchmethod",
    ),
}
FORBIDDEN_ATTR_REASONS = {a: why for why, names in FORBIDDEN_ATTR_GROUPS.items() for a in names}
FORBIDDEN_ATTRS = frozenset(FORBIDDEN_ATTR_REASONS)
# `__module__` and `__qualname__` read strings (LEMUR's programs print where a layer came
# from); assigning any dunder attribute stays refused.
ALLOWED_DUNDER_ATTRS = frozenset(
    {"__init__", "__name__", "__qualname__", "__module__", "__class__", "__call__"}
)
ALLOWED_DUNDER_NAMES = frozenset({"__name__"})
# Dunder names a program may assign (TorchScript's `__constants__` class attribute, as in
# torchvision's and LEMUR's GoogLeNet): read only by TorchScript (refused), the class
# machinery (`__slots__`) and star imports of the program (nobody imports it).
ALLOWED_DUNDER_STORES = frozenset({"__constants__", "__slots__", "__all__"})
# Dunder methods a program may define; others (__reduce__, __getattribute__, __del__, ...)
# change how the object behaves when the trusted side pickles, inspects or frees it.
ALLOWED_DUNDER_DEFS = frozenset(
    {
        "__init__",
        "__call__",
        "__repr__",
        "__str__",
        "__len__",
        "__getitem__",
        "__iter__",
        "__post_init__",
        "__hash__",
        "__eq__",
    }
)
ALLOWED_DUNDER_STRINGS = frozenset({"__main__"})
ATTR_NAME_FUNCS = frozenset({"getattr", "hasattr", "setattr", "delattr"})

DUNDER_PATTERN = re.compile(r"__\w+__")
FORMAT_FIELD_ACCESS = re.compile(r"\{[^{}]*[.\[][^{}]*\}")
