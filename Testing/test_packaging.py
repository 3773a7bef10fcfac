"""The extension package contains every run-time file, at the place the module looks for it.

A file the CMake build does not list is silently missing from the built extension, so:
- the file lists are taken from ``LumbarSeg/LumbarSegFiles.cmake`` evaluated by real
  ``cmake -P`` and compared with the files on disk;
- the top-level ``CMakeLists.txt`` is configured by real CMake against a stand-in
  for the Slicer build files (3D Slicer cannot be installed here).  The stand-in only
  records which file each Slicer/CTK copy macro would copy where, using CTK's rule
  ``<SOURCE_DIR>/<path> -> <DESTINATION_DIR>/<path>``; the recorded files are then
  copied into a scratch "qt-scripted-modules" folder and imported from there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME_RESOURCE_DIRS = ("Models", "UI", "Icons", "Terminology")
NOT_RUNTIME = {"Resources/Icons/make_icons.py"}
SCRIPTED_MODULES_DIR = "lib/Slicer-5.8/qt-scripted-modules"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


def hidden(relative: str) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in relative.split("/"))


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in folder.rglob("*")
            if p.is_file() and not hidden(p.relative_to(REPO).as_posix())}


@pytest.fixture(scope="module")
def cmake_lists(tmp_path_factory) -> dict[str, list[str]]:
    """LUMBARSEG_LIB_SCRIPTS and LUMBARSEG_RESOURCES as CMake computes them."""
    folder = tmp_path_factory.mktemp("cmake_lists")
    driver = folder / "print_lists.cmake"
    driver.write_text(
        'include("${LUMBARSEG_ROOT}/LumbarSeg/LumbarSegFiles.cmake")\n'
        'foreach(name LUMBARSEG_LIB_SCRIPTS LUMBARSEG_RESOURCES)\n'
        '  string(REPLACE ";" "\\n" text "${${name}}")\n'
        '  file(WRITE "${OUT}/${name}.txt" "${text}")\n'
        'endforeach()\n')
    subprocess.run(["cmake", f"-DLUMBARSEG_ROOT={REPO}", f"-DOUT={folder}", "-P", str(driver)],
                   check=True, capture_output=True, text=True)
    return {name: (folder / f"{name}.txt").read_text().split()
            for name in ("LUMBARSEG_LIB_SCRIPTS", "LUMBARSEG_RESOURCES")}


def test_every_listed_file_exists(cmake_lists):
    listed = cmake_lists["LUMBARSEG_LIB_SCRIPTS"] + cmake_lists["LUMBARSEG_RESOURCES"]
    assert listed
    missing = [path for path in listed if not (REPO / path).is_file()]
    assert not missing


def test_every_lumbarseglib_module_is_packaged(cmake_lists):
    on_disk = {p for p in files_under(REPO / "LumbarSegLib") if p.endswith(".py")}
    assert "LumbarSegLib/slicer_bridge.py" in on_disk and "LumbarSegLib/__init__.py" in on_disk
    assert on_disk == set(cmake_lists["LUMBARSEG_LIB_SCRIPTS"])


def test_every_runtime_resource_is_packaged(cmake_lists):
    on_disk = set()
    for name in RUNTIME_RESOURCE_DIRS:
        on_disk |= files_under(REPO / "Resources" / name)
    expected = on_disk - NOT_RUNTIME
    for required in ("Resources/UI/LumbarSeg.ui", "Resources/Icons/LumbarSeg.png",
                     "Resources/Icons/LumbarSegExtension.png", "Resources/Terminology/LumbarSeg.term.json"):
        assert required in expected
    assert set(cmake_lists["LUMBARSEG_RESOURCES"]) == expected, (
        "a file under Resources/ is neither packaged nor listed in NOT_RUNTIME")


def test_top_level_cmakelists_declares_the_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"^set\({variable} \"[^\"]+\"\)", text, re.M), variable
    assert re.search(r'^set\(EXTENSION_CATEGORY "Segmentation"\)', text, re.M)
    assert re.search(r'^set\(EXTENSION_DEPENDS "PyTorch"\)', text, re.M)
    assert "LumbarSegExtension.png" in re.search(r"EXTENSION_ICONURL.*", text).group()
    order = ["project(LumbarSeg)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
             "add_subdirectory(LumbarSeg)", "## NEXT_MODULE", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
             "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.index(item) for item in order]
    assert positions == sorted(positions)


STAND_IN_CONFIG = """
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/Nothing.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/Nothing.cmake")
"""

STAND_IN_USE_FILE = """
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "@SCRIPTED@")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "@SCRIPTED@")
function(stand_in_record source_dir destination_dir)
  foreach(file IN LISTS ARGN)
    file(APPEND "${STAND_IN_RECORD}" "${source_dir}/${file}|${destination_dir}/${file}\\n")
  endforeach()
endfunction()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(SBSM "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(SBSM_UNPARSED_ARGUMENTS OR NOT SBSM_NAME)
    message(FATAL_ERROR "bad slicerMacroBuildScriptedModule call: ${ARGN}")
  endif()
  stand_in_record("${CMAKE_CURRENT_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    ${SBSM_SCRIPTS} ${SBSM_RESOURCES})
endmacro()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(CMPS "NO_INSTALL_SUBDIR;GLOBAL_TARGET"
    "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  if(CMPS_UNPARSED_ARGUMENTS OR NOT CMPS_TARGET_NAME OR NOT CMPS_DESTINATION_DIR OR NOT CMPS_INSTALL_DIR)
    message(FATAL_ERROR "bad ctkMacroCompilePythonScript call: ${ARGN}")
  endif()
  if(NOT CMPS_SOURCE_DIR)
    set(CMPS_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  stand_in_record("${CMPS_SOURCE_DIR}" "${CMPS_DESTINATION_DIR}" ${CMPS_SCRIPTS} ${CMPS_RESOURCES})
endmacro()
function(slicer_add_python_unittest)
endfunction()
"""


@pytest.fixture(scope="module")
def staged_module(tmp_path_factory) -> Path:
    """The qt-scripted-modules folder a build would produce, made from the recorded copies."""
    root = tmp_path_factory.mktemp("extension")
    stand_in, build = root / "SlicerStandIn", root / "build"
    stand_in.mkdir()
    (stand_in / "SlicerConfig.cmake").write_text(STAND_IN_CONFIG)
    (stand_in / "UseSlicer.cmake").write_text(STAND_IN_USE_FILE.replace("@SCRIPTED@", SCRIPTED_MODULES_DIR))
    (stand_in / "Nothing.cmake").write_text("")
    record = root / "copies.txt"
    result = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stand_in}", f"-DSTAND_IN_RECORD={record}",
         "-DBUILD_TESTING=ON"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    destination_root = build / SCRIPTED_MODULES_DIR
    staged = root / "installed" / SCRIPTED_MODULES_DIR
    for line in record.read_text().splitlines():
        source, target = (Path(os.path.normpath(part)) for part in line.split("|"))
        assert source.is_file(), f"CMake copies a missing file: {source}"
        relative = target.relative_to(destination_root)  # raises if copied outside the module folder
        (staged / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, staged / relative)
    return staged


def test_built_layout_has_module_library_and_resources_side_by_side(staged_module, cmake_lists):
    assert (staged_module / "LumbarSeg.py").is_file()
    for path in cmake_lists["LUMBARSEG_LIB_SCRIPTS"] + cmake_lists["LUMBARSEG_RESOURCES"]:
        assert (staged_module / path).is_file(), path
    staged = {p.relative_to(staged_module).as_posix() for p in staged_module.rglob("*") if p.is_file()}
    assert staged == {"LumbarSeg.py", *cmake_lists["LUMBARSEG_LIB_SCRIPTS"], *cmake_lists["LUMBARSEG_RESOURCES"]}


def test_built_layout_imports_lumbarseglib_from_beside_the_module(staged_module):
    code = (
        "import sys, LumbarSegLib, LumbarSegLib.slicer_bridge, LumbarSegLib.resources as r\n"
        "from pathlib import Path\n"
        "print(Path(LumbarSegLib.__file__).parent.parent)\n"
        "print(any(Path(r.__file__).parent.parent.joinpath('Resources', 'Models').glob('*')))\n"
        "try:\n    print(r.resources_dir())\nexcept FileNotFoundError:\n    print('no models')\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=staged_module, env=env,
                            capture_output=True, text=True, check=True)
    package_parent, has_models, resources = result.stdout.split("\n")[:3]
    assert Path(package_parent) == staged_module
    repo_has_models = any(files_under(REPO / "Resources" / "Models"))
    assert has_models == str(repo_has_models)
    if repo_has_models:
        assert Path(resources) == staged_module / "Resources"
