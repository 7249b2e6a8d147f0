"""The build: what setup.py recorded in fastconv/_build_info.py against what the compiler really did
to each file of the extension (read from the binary's DWARF compile units), and the package's
declared dependencies.

CI builds with FASTCONV_NO_OPENMP=1, FASTCONV_DEBUG=1 and FASTCONV_NO_OPENMP=1 again, one after the
other in one checkout (.ci/rebuild), and sets FASTCONV_EXPECT_OPENMP / FASTCONV_EXPECT_DEBUG so a
build that reused the objects of the previous configuration fails here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from fastconv import _build_info, _kernels

CONFIG = _build_info.CONFIG
ISA_FILE = re.compile(r"_(avx2|avx512)\.c$")


def _compile_units() -> dict[str, list[str]]:
    """{source file: the flags gcc recorded for it} for fastconv's own C files in the extension.

    gcc writes each file's command line into DW_AT_producer when it emits debug information
    (Python's CFLAGS usually carry -g); other compilers, or a build without -g, leave the test
    skipped."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    dump = subprocess.run(["readelf", "--debug-dump=info", "--dwarf-depth=1", _kernels.__file__],
                          capture_output=True, text=True, check=True).stdout
    units = {}
    for unit in dump.split("DW_TAG_compile_unit")[1:]:
        attributes = dict(re.findall(r"DW_AT_(producer|name)\s*:\s*(?:\([^)]*\):\s*)?(.*)", unit))
        name, producer = attributes.get("name", ""), attributes.get("producer", "")
        if producer.startswith("GNU C") and (name.startswith("src/")
                                             or name.endswith("fastconv/_kernels.c")):
            units[name] = producer.split()
    if not any("-O" in flag for flags in units.values() for flag in flags):
        pytest.skip("the extension carries no gcc command lines (not gcc, or built without -g)")
    return units


def _last_optimisation_level(flags: list[str]) -> str:
    return [flag for flag in flags if re.fullmatch(r"-O\w?", flag)][-1]


def test_the_record_matches_the_binary():
    assert CONFIG["openmp"] == _kernels.openmp_enabled()
    for isa in CONFIG["isa_flags"]:
        assert _kernels.isa_compiled(isa), f"{isa} is recorded but not compiled in"
    for isa in _kernels.isa_names():
        if isa != "scalar":
            assert _kernels.isa_compiled(isa) == (isa in CONFIG["isas"]), isa


def test_the_binary_was_built_from_this_configuration():
    """Cython's C file is generated in a build folder named by the configuration's hash."""
    (generated,) = [name for name in _compile_units() if name.endswith("fastconv/_kernels.c")]
    assert f"fastconv-{CONFIG['hash']}" in Path(generated).parts, generated


def test_isa_flags_reach_exactly_the_isa_files():
    units = _compile_units()
    all_isa_flags = {flag for flags in CONFIG["isa_flags"].values() for flag in flags}
    seen = set()
    for name, flags in units.items():
        match = ISA_FILE.search(name)
        expected = set(CONFIG["isa_flags"][match[1]]) if match else set()
        assert all_isa_flags.intersection(flags) == expected, (name, flags)
        seen.add(match[1] if match else "portable")
    assert seen == {"portable", *CONFIG["isas"]}


def test_no_file_is_built_for_the_build_machine_alone():
    for name, flags in _compile_units().items():
        assert not any(flag in ("-march=native", "-mtune=native") for flag in flags), name
    assert "-march=native" not in CONFIG["compile_args"]


def test_every_file_has_the_configured_flags():
    """Every file, ISA files included, gets the optimisation level, the maths flags and OpenMP."""
    units = _compile_units()
    level = "-O1" if CONFIG["sanitize"] else "-O0" if CONFIG["debug"] else "-O3"
    for name, flags in units.items():
        assert _last_optimisation_level(flags) == level, (name, flags)
        for flag in ("-fno-math-errno", "-fno-trapping-math", "-fno-strict-aliasing",
                     "-ffp-contract=off"):
            assert flag in flags, (name, flag)
        assert ("-fopenmp" in flags) == CONFIG["openmp"], (name, flags)


@pytest.mark.parametrize(("variable", "key"), [("FASTCONV_EXPECT_OPENMP", "openmp"),
                                               ("FASTCONV_EXPECT_DEBUG", "debug")])
def test_configuration_as_the_build_expects(variable, key):
    """.ci/rebuild sets these after each build of its sequence."""
    expected = os.environ.get(variable)
    if expected not in ("0", "1"):
        pytest.skip(f"{variable} is not set")
    assert CONFIG[key] == (expected == "1")
    if key == "openmp":
        assert _kernels.openmp_enabled() == (expected == "1")
    if key == "debug":
        assert CONFIG["cython_directives"]["boundscheck"] == (expected == "1")
        level = _last_optimisation_level(next(iter(_compile_units().values())))
        assert level == ("-O0" if expected == "1" else "-O3")


def test_the_library_requires_numpy_alone():
    """Every other package is an extra; `import fastconv` needs none of them."""
    requirements = metadata.requires("fastconv") or []
    plain = [r for r in requirements if "extra ==" not in r]
    assert [r.replace(" ", "") for r in plain] == ["numpy>=1.23"]
    extras = set(metadata.metadata("fastconv").get_all("Provides-Extra") or [])
    assert {"cli", "test", "bench", "plot", "dask", "onnx", "numpy-ml"} <= extras


def test_setup_py_replaces_no_private_attribute():
    """setup.py uses setuptools' public API: no assignment to another object's _private name
    (the old build replaced compiler._compile to add per-file flags)."""
    setup_py = Path(__file__).resolve().parents[1] / "setup.py"
    if not setup_py.exists():
        pytest.skip("no setup.py beside the tests (tests installed on their own)")
    tree = ast.parse(setup_py.read_text())
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr.startswith("_"):
                pytest.fail(f"setup.py line {node.lineno} assigns {ast.unparse(target)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            pytest.fail(f"setup.py line {node.lineno} calls setattr")
