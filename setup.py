"""Build the fastconv._kernels extension.

What this file decides, and why:
- Sources: fastconv/_kernels.pyx and every C file under src/ make one extension; every other file
  under src/ (headers, X-macro lists) is a dependency. Nothing here names a kernel file, so kernels
  can be split and renamed freely.
- SIMD: files named *_avx2.c / *_avx512.c, and only they, get that instruction set's flags. Each
  ISA is probed first: one the compiler (or target) cannot build is left out, its files are not
  compiled and dispatch skips it (FC_BUILD_AVX2 / FC_BUILD_AVX512 stay undefined). Never
  -march=native: the binary runs on any CPU of its architecture and picks its path at import.
- OpenMP is probed with the real compiler; without it (Apple clang, say) the build goes serial and
  warns. FASTCONV_NO_OPENMP=1 forces the serial build so that path is tested too.
- FASTCONV_DEBUG=1 builds -O0 -g with Cython bounds checks; FASTCONV_SANITIZE=address,undefined adds
  -fsanitize flags (run with the sanitizer runtime preloaded, as .ci/sanitize does).
- Rebuilds: the build configuration (compiler and its command line, flags, OpenMP, ISAs, debug,
  sanitize, Cython and NumPy versions) is hashed. Objects and Cython's C go to a build-temp folder
  named by that hash, and a stamp file holding the configuration, rewritten whenever it changes, is
  a dependency of the extension: a changed flag rebuilds it even when no source is newer than the
  last build. The configuration is written beside the extension as fastconv/_build_info.py
  (CONFIG), which fastconv.show_config() prints.
- Incremental: an object is recompiled only when it is missing or older than its source or a file
  the source includes. GCC-style compilers write each object's list of included files beside it
  (-MMD, a make rule: the list that compile really read, computed includes such as FC_TEMPLATE
  included); for MSVC every file under src/ counts as included. The objects of each configuration
  stay in their own folder, so going back to an earlier configuration relinks its objects and
  compiles only what changed since. A missing or unreadable list means recompile.
- Parallel: the stale files are compiled FASTCONV_BUILD_JOBS at a time (default: one per core the
  process may run on), and all objects are linked in a fixed order, so the binary depends neither
  on the job count (which is no part of the configuration) nor on which files were rebuilt.
"""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import Cython
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError, SetupError

SRC = Path("src")
PACKAGE = "fastconv"
BUILD_INFO = "_build_info.py"
BUILD_INFO_DOC = '"""How this build of fastconv._kernels was made (written by setup.py)."""\n'

# Flags per instruction set, for GCC-style compilers (gcc, clang, MinGW) and for MSVC.
ISA_FLAGS = {
    "avx2": {"gcc": ["-mavx2", "-mfma"], "msvc": ["/arch:AVX2"]},
    "avx512": {"gcc": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
               "msvc": ["/arch:AVX512"]},
}

# Each probe uses an intrinsic the ISA's flags enable and refuses a target that is not x86-64 (a
# cross-compiler for arm64 on an x86-64 host, say), so the answer is about the target, not the host.
_X86_64_ONLY = """
#if !defined(__x86_64__) && !defined(_M_X64)
#error "not an x86-64 target"
#endif
#include <immintrin.h>
"""
ISA_PROBES = {
    "avx2": _X86_64_ONLY + "__m256 probe(__m256 a) { return _mm256_fmadd_ps(a, a, a); }\n",
    "avx512": _X86_64_ONLY + """
__m512 probe(__m512 a, __m512i i) {
    __mmask64 bytes = _mm512_movepi8_mask(i);                /* AVX-512BW */
    __m512d d = _mm512_cvtepi64_pd(i);                       /* AVX-512DQ */
    __m256 half = _mm256_maskz_mov_ps((__mmask8)bytes, _mm512_castps512_ps256(a));  /* VL */
    return _mm512_fmadd_ps(a, _mm512_castps256_ps512(half), _mm512_castpd_ps(d));
}
""",
}

OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _isa_of(source):
    """The ISA a source file is written for ('avx2' for conv2d_avx2.c), or None if portable."""
    stem = Path(source).stem
    return next((isa for isa in ISA_FLAGS if stem.endswith("_" + isa)), None)


def _build_jobs():
    """How many files to compile at once: FASTCONV_BUILD_JOBS, else one per core this process may
    run on (a CI container's CPU set, not the host's count)."""
    raw = os.environ.get("FASTCONV_BUILD_JOBS", "").strip()
    if not raw:
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0)) or 1
        return os.cpu_count() or 1
    if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
        raise SetupError(f"FASTCONV_BUILD_JOBS must be a whole number >= 1, got {raw!r}")
    return int(raw)


def _flavour(compiler):
    return "msvc" if compiler.compiler_type == "msvc" else "gcc"


def _compiles(compiler, code, flags=(), link=False):
    """True if `code` compiles (and, with `link`, links into a program) with `flags`.

    The compiler's complaints about a probe are expected, so its stderr is silenced."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text(textwrap.dedent(code))
        saved_stderr = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
            objects = compiler.compile([str(source)], output_dir=tmp, extra_postargs=list(flags))
            if link:
                compiler.link_executable(objects, str(Path(tmp) / "probe"),
                                         extra_postargs=list(flags))
        except (CompileError, LinkError):
            return False
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    return True


def _compiler_identity(compiler):
    """What names the compiler: its full command lines (with CFLAGS, LDFLAGS) and its version."""
    commands = {name: getattr(compiler, name) for name in ("compiler_so", "linker_so")
                if getattr(compiler, name, None)}
    version = compiler.compiler_type
    if "compiler_so" in commands:
        try:
            out = subprocess.run([commands["compiler_so"][0], "--version"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
            version = out.splitlines()[0].strip() if out.strip() else version
        except (OSError, subprocess.SubprocessError):
            pass
    return commands, version


def _write_if_changed(path, text):
    """Write `text` to `path` unless it already holds exactly that (its mtime then stays)."""
    path = Path(path)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _depfile_inputs(depfile):
    """The files a make rule written by `gcc -MMD -MF depfile` names as its target's inputs.

    One rule, `target: input input \\` over continued lines; a space in a name is `\\ `."""
    text = Path(depfile).read_text().replace("\\\n", " ")
    _, separator, inputs = text.partition(": ")
    if not separator:
        raise ValueError(f"{depfile}: not a make rule")
    return [name.replace("\\ ", " ") for name in re.split(r"(?<!\\)\s+", inputs.strip()) if name]


def _is_stale(obj, inputs):
    """True if `obj` is missing or older than any of `inputs` (a missing input counts as newer)."""
    try:
        built = os.stat(obj).st_mtime_ns
        return any(os.stat(name).st_mtime_ns > built for name in inputs)
    except OSError:
        return True


def cython_directives(debug):
    directives = {"language_level": "3", "embedsignature": True}
    if debug:
        directives.update(boundscheck=True, wraparound=True)
    else:
        directives.update(boundscheck=False, wraparound=False, cdivision=True)
    return directives


class BuildExt(build_ext):
    """build_ext that probes OpenMP and the ISAs, compiles the files in parallel (each ISA's with
    its own flags), and rebuilds whenever the build configuration changes."""

    def build_extensions(self):
        self.build_config = self._configure()
        base_temp = Path(self.build_temp)
        stamp = base_temp / "fastconv-build-config.json"
        _write_if_changed(stamp, json.dumps(self.build_config, indent=1, sort_keys=True) + "\n")
        self.build_temp = str(base_temp / f"fastconv-{self.build_config['hash']}")

        macros = [(f"FC_BUILD_{isa.upper()}", "1") for isa in self.build_config["isas"]]
        for ext in self.extensions:
            ext.depends = [*ext.depends, str(stamp)]
            ext.define_macros = [*macros, *ext.define_macros]
            ext.extra_compile_args = [*self.build_config["compile_args"], *ext.extra_compile_args]
            ext.extra_link_args = [*self.build_config["link_args"], *ext.extra_link_args]
        super().build_extensions()
        entries = "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(self.build_config.items()))
        _write_if_changed(self._build_info_path(), f"{BUILD_INFO_DOC}\nCONFIG = {{\n{entries}}}\n")

    def build_extension(self, ext):
        (cythonized,) = cythonize([ext], compiler_directives=self.build_config["cython_directives"],
                                  build_dir=self.build_temp, force=self.force, quiet=True)
        plain = sorted(s for s in cythonized.sources if _isa_of(s) is None)
        isa_flags = self.build_config["isa_flags"]
        jobs = [(source, []) for source in plain]
        jobs += [(source, isa_flags[isa]) for isa in ISA_FLAGS if isa in isa_flags
                 for source in cythonized.sources if _isa_of(source) == isa]
        objects = self._compile_stale(ext, jobs)
        # build_ext only links now, these objects in this fixed order, when one of them, the
        # configuration stamp or a file under src/ is newer than the extension
        ext.sources = []
        ext.extra_objects = [*objects, *ext.extra_objects]
        ext.depends = [*ext.depends, *objects]
        super().build_extension(ext)

    def _compile_stale(self, ext, jobs):
        """Compile each (source, extra flags) job whose object is stale, FASTCONV_BUILD_JOBS at a
        time; return every job's object in the jobs' order. Each compile is a subprocess, so
        threads run them side by side; the first failure cancels the compiles not yet started
        and is raised."""
        gcc_style = _flavour(self.compiler) == "gcc"

        def object_of(source):
            return self.compiler.object_filenames([source], output_dir=self.build_temp)[0]

        def inputs_of(source, obj):
            if not gcc_style:
                return [source, *ext.depends]
            try:
                return [source, *_depfile_inputs(obj + ".d")]
            except (OSError, ValueError):
                return None  # no usable list: compile

        def compile_one(source, flags):
            obj = object_of(source)
            depfile = ["-MMD", "-MF", obj + ".d"] if gcc_style else []
            self.compiler.compile(
                [source], output_dir=self.build_temp, macros=ext.define_macros,
                include_dirs=ext.include_dirs, debug=self.debug,
                extra_postargs=[*ext.extra_compile_args, *flags, *depfile])
            return obj

        stale = []
        for source, flags in jobs:
            obj = object_of(source)
            inputs = inputs_of(source, obj)
            if self.force or inputs is None or _is_stale(obj, inputs):
                self.mkpath(os.path.dirname(obj))  # here, not by racing threads
                stale.append((source, flags))
        if stale:
            self.announce(f"fastconv: compiling {len(stale)} of {len(jobs)} files",
                          level=logging.INFO)
        with ThreadPoolExecutor(max_workers=_build_jobs()) as pool:
            futures = [pool.submit(compile_one, source, flags) for source, flags in stale]
            wait(futures, return_when=FIRST_EXCEPTION)
            pool.shutdown(cancel_futures=True)
        for future in futures:
            future.result()
        return [object_of(source) for source, _ in jobs]

    def _configure(self):
        """The build configuration: flags, probes' results, versions, and its hash."""
        compiler = self.compiler
        flavour = _flavour(compiler)
        debug = _env_flag("FASTCONV_DEBUG")
        sanitize = os.environ.get("FASTCONV_SANITIZE", "").strip()

        if flavour == "msvc":
            compile_args = ["/Od", "/Zi"] if debug else ["/O2"]
        else:
            # -fno-math-errno: no kernel reads errno, and with it set gcc keeps sqrt scalar
            # (a call per element for the errno of a negative argument) instead of vsqrtps.
            # -fno-trapping-math: no kernel reads the floating-point exception flags, and with
            # them gcc will not compute both sides of `s == 0 ? 0 : g / sqrt(s)` to vectorise
            # it. Neither changes a result.
            # -ffp-contract=off: the compiler may not fuse a*b + c where it pleases. A fused and
            # an unfused evaluation round differently, and gcc fuses in a vectorised loop and in
            # its scalar remainder differently, so a result would depend on which of the two
            # computed it (lp_pool2d's last plane changed in its last bit with the images batched
            # around it). The microkernels' multiply-adds are explicit FMA intrinsics and stay.
            compile_args = (["-O0", "-g"] if debug else ["-O3"]) + [
                "-std=gnu11", "-fno-strict-aliasing", "-fno-math-errno", "-fno-trapping-math",
                "-ffp-contract=off"]
        link_args = []
        if sanitize:
            if flavour == "msvc":
                raise SetupError("FASTCONV_SANITIZE needs gcc or clang, not MSVC")
            # -fno-wrapv undoes Python's -fwrapv so UBSan sees signed overflow; reports are fatal
            compile_args += [f"-fsanitize={sanitize}", "-fno-sanitize-recover=undefined",
                             "-fno-wrapv", "-fno-omit-frame-pointer", "-g", "-O1"]
            link_args += [f"-fsanitize={sanitize}"]

        openmp_flags = self._openmp_flags(flavour)
        if openmp_flags:
            compile_args += openmp_flags
            if flavour != "msvc":  # MSVC's linker takes no /openmp; the compiler pulls it in
                link_args += openmp_flags

        isa_flags = {isa: flags[flavour] for isa, flags in ISA_FLAGS.items()
                     if _compiles(compiler, ISA_PROBES[isa], flags[flavour])}
        commands, compiler_version = _compiler_identity(compiler)
        config = {
            "compiler": compiler_version,
            "compiler_type": compiler.compiler_type,
            "compile_args": compile_args,
            "link_args": link_args,
            "openmp": bool(openmp_flags),
            "isas": sorted(isa_flags),
            "isa_flags": isa_flags,
            "debug": debug,
            "sanitize": sanitize,
            "cython_directives": cython_directives(debug),
            "python": sysconfig.get_config_var("EXT_SUFFIX") or sys.version,
            "cython": Cython.__version__,
            "numpy": np.__version__,
        }
        identity = json.dumps({**config, "commands": commands}, sort_keys=True)
        config["hash"] = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return config

    def _openmp_flags(self, flavour):
        """The flags that build and link an OpenMP program with this compiler; [] if none do."""
        if _env_flag("FASTCONV_NO_OPENMP"):
            warnings.warn("fastconv: FASTCONV_NO_OPENMP is set; building serial kernels",
                          stacklevel=2)
            return []
        flags = ["/openmp"] if flavour == "msvc" else ["-fopenmp"]
        if _compiles(self.compiler, OPENMP_PROBE, flags, link=True):
            return flags
        warnings.warn(
            "fastconv: the C compiler does not support OpenMP; building serial kernels. "
            "Use a compiler with OpenMP (gcc, or LLVM clang with libomp) and rebuild for "
            "multi-threading.", stacklevel=2)
        return []

    def _build_info_path(self):
        return Path(self.build_lib, PACKAGE, BUILD_INFO)

    # fastconv/_build_info.py travels with the extension: into wheels (it is in build_lib), and
    # into the source tree for in-place and editable builds.
    def copy_extensions_to_source(self):
        super().copy_extensions_to_source()
        package_dir = self.get_finalized_command("build_py").get_package_dir(PACKAGE)
        self.copy_file(str(self._build_info_path()), os.path.join(package_dir, BUILD_INFO))

    def get_outputs(self):
        outputs = super().get_outputs()  # in place: get_output_mapping's keys, which include it
        return outputs if self.inplace else [*outputs, str(self._build_info_path())]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if self.inplace:
            package_dir = self.get_finalized_command("build_py").get_package_dir(PACKAGE)
            mapping[str(self._build_info_path())] = os.path.join(package_dir, BUILD_INFO)
        return mapping


def _under_src(pattern):
    return sorted(str(p) for p in SRC.rglob(pattern) if p.is_file())


extensions = [
    Extension(
        "fastconv._kernels",
        sources=["fastconv/_kernels.pyx", *_under_src("*.c")],
        include_dirs=[*sorted({str(Path(h).parent) for h in _under_src("*.h")}),
                      np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       # the oldest NumPy the binary runs with: pyproject.toml's numpy>=1.23
                       ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")],
        # headers, and anything else a source may #include (an X-macro list, say)
        depends=_under_src("*"),
    )
]

if sys.platform == "win32":
    warnings.warn("fastconv: Windows builds are untested", stacklevel=2)

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
