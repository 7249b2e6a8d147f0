"""Build the fastconv._kernels extension.

What this file decides, and why:
- OpenMP is probed with the real compiler; without it (Apple clang, say) the build goes serial
  and warns.
  FASTCONV_NO_OPENMP=1 forces the serial build so that path is tested too.
- SIMD kernels live in files named *_avx2.c / *_avx512.c and only those files get -m flags, so the
  default binary runs on any x86-64 CPU and picks its path at import (no -march=native).
- FASTCONV_DEBUG=1 builds -O0 -g with Cython bounds checks; FASTCONV_SANITIZE=address,undefined adds
  -fsanitize flags (run with the sanitizer runtime preloaded).
"""

import os
import platform
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
KERNEL_DIR = Path("src") / "kernels"
RUNTIME_DIR = Path("src") / "runtime"  # Python-facing C support (the output cache)

ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
}
ISA_MACROS = {"avx2": "FC_BUILD_AVX2", "avx512": "FC_BUILD_AVX512"}


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _isa_of(source):
    stem = Path(source).stem
    for isa in ISA_FLAGS:
        if stem.endswith("_" + isa):
            return isa
    return None


def _try_compile(compiler, code, extra_compile=(), extra_link=(), link=True):
    """Return True if `code` compiles (and links) with the given flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(textwrap.dedent(code))
        try:
            with open(os.devnull, "w") as devnull:
                old_err = os.dup(2)
                os.dup2(devnull.fileno(), 2)
                try:
                    objs = compiler.compile([str(src)], output_dir=tmp,
                                            extra_postargs=list(extra_compile))
                    if link:
                        compiler.link_executable(objs, str(Path(tmp) / "probe"),
                                                 extra_postargs=list(extra_link))
                finally:
                    os.dup2(old_err, 2)
                    os.close(old_err)
        except Exception:  # any compile or link failure means "not supported"
            return False
    return True


OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""

SIMD_PROBE = """
#include <immintrin.h>
int main(void) { return 0; }
"""


class BuildExt(build_ext):
    """build_ext that probes OpenMP and SIMD flags and applies ISA flags per source file."""

    def build_extensions(self):
        compiler = self.compiler
        is_msvc = compiler.compiler_type == "msvc"
        compile_args, link_args, macros = [], [], []

        if _env_flag("FASTCONV_DEBUG"):
            compile_args += ["/Od"] if is_msvc else ["-O0", "-g"]
            macros.append(("FC_DEBUG", "1"))
        else:
            compile_args += ["/O2"] if is_msvc else ["-O3"]
        if not is_msvc:
            # -fno-math-errno: no kernel reads errno, and with it set gcc keeps sqrt scalar
            # (a call per element for the errno of a negative argument) instead of vsqrtps.
            # -fno-trapping-math: no kernel reads the floating-point exception flags, and with
            # them gcc will not compute both sides of `s == 0 ? 0 : g / sqrt(s)` to vectorise
            # it. Neither changes a result.
            compile_args += ["-std=gnu11", "-fno-strict-aliasing", "-fno-math-errno",
                             "-fno-trapping-math"]

        sanitize = os.environ.get("FASTCONV_SANITIZE", "").strip()
        if sanitize:
            # -fno-wrapv undoes Python's -fwrapv so UBSan sees signed overflow; reports are fatal
            flags = [f"-fsanitize={sanitize}", "-fno-sanitize-recover=undefined", "-fno-wrapv",
                     "-fno-omit-frame-pointer", "-g", "-O1"]
            compile_args += flags
            link_args += [f"-fsanitize={sanitize}"]

        # OpenMP: probe with this compiler, fall back to serial with a warning.
        omp_flag = "/openmp" if is_msvc else "-fopenmp"
        if _env_flag("FASTCONV_NO_OPENMP"):
            warnings.warn("fastconv: FASTCONV_NO_OPENMP is set; building serial kernels",
                          stacklevel=2)
        elif _try_compile(compiler, OPENMP_PROBE, [omp_flag], [omp_flag]):
            compile_args.append(omp_flag)
            link_args.append(omp_flag)
        else:
            warnings.warn(
                "fastconv: the C compiler does not support OpenMP; building serial kernels. "
                "Install an OpenMP runtime (e.g. libomp) and rebuild for multi-threading.",
                stacklevel=2,
            )

        # SIMD: only on x86-64 with a GCC-compatible compiler, and only the flags that compile.
        self._isa_enabled = {}
        x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
        for isa, flags in ISA_FLAGS.items():
            ok = x86 and not is_msvc and _try_compile(compiler, SIMD_PROBE, flags, link=False)
            self._isa_enabled[isa] = ok
            if ok:
                macros.append((ISA_MACROS[isa], "1"))

        for ext in self.extensions:
            ext.sources = [s for s in ext.sources
                           if _isa_of(s) is None or self._isa_enabled[_isa_of(s)]]
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
            ext.define_macros = macros + list(ext.define_macros)

        # Per-file ISA flags: wrap the compiler's per-source compile step.
        original_compile = compiler._compile

        def compile_with_isa_flags(obj, src, ext, cc_args, extra_postargs, pp_opts):
            isa = _isa_of(src)
            extra = list(extra_postargs) + (ISA_FLAGS[isa] if isa else [])
            return original_compile(obj, src, ext, cc_args, extra, pp_opts)

        compiler._compile = compile_with_isa_flags
        super().build_extensions()


def kernel_sources():
    return sorted(str(p) for p in KERNEL_DIR.glob("*.c"))


directives = {"language_level": "3", "embedsignature": True}
if _env_flag("FASTCONV_DEBUG"):
    directives.update(boundscheck=True, wraparound=True)
else:
    directives.update(boundscheck=False, wraparound=False, cdivision=True)

extensions = [
    Extension(
        "fastconv._kernels",
        sources=["fastconv/_kernels.pyx", str(RUNTIME_DIR / "output_cache.c")] + kernel_sources(),
        include_dirs=[str(KERNEL_DIR), str(RUNTIME_DIR), np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=sorted(str(p) for d in (KERNEL_DIR, RUNTIME_DIR) for p in d.glob("*.h")),
    )
]

if sys.platform == "win32":
    warnings.warn("fastconv: Windows builds are untested", stacklevel=2)

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives),
    cmdclass={"build_ext": BuildExt},
)
