"""Static checks of the Slicer module (LumbarSeg/LumbarSeg.py and its .ui) without Slicer.

LumbarSeg.py imports slicer, qt and vtk's Slicer wrappers, so it is never imported
here (and slicer is not faked): it is parsed.  What needs a running Slicer (widget
behaviour, loading the result, subject hierarchy, terminology) is covered by the
in-Slicer test class ``LumbarSegTest`` (see docs/SLICER.md).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_PY = REPO / "LumbarSeg" / "LumbarSeg.py"
UI_FILE = REPO / "Resources" / "UI" / "LumbarSeg.ui"
SOURCE = MODULE_PY.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)

# Class each widget used as self.ui.<name> must have.
EXPECTED_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "inputVolumeSelector": "qMRMLNodeComboBox",
    "outputSegmentationSelector": "qMRMLNodeComboBox",
    "deviceComboBox": "QComboBox",
    "optionsCollapsibleButton": "ctkCollapsibleButton",
    "writeMeshesCheckBox": "QCheckBox",
    "writePreviewCheckBox": "QCheckBox",
    "segmentButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "resultsCollapsibleButton": "ctkCollapsibleButton",
    "show3DButton": "qMRMLSegmentationShow3DButton",
    "segmentEditorButton": "QPushButton",
    "flagsLabel": "QLabel",
    "reportTableWidget": "QTableWidget",
    "logCollapsibleButton": "ctkCollapsibleButton",
    "logTextEdit": "QPlainTextEdit",
}
# Widget classes the parameterNodeWrapper can bind to each parameter type.
CONNECTABLE = {"bool": {"QCheckBox", "ctkCheckBox"}, "str": {"QComboBox", "ctkComboBox", "QLineEdit"}}
REMOVED_IN_312 = {"imp", "distutils", "asynchat", "asyncore", "smtpd"}


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def ui_names_used() -> set[str]:
    return {
        node.attr for node in ast.walk(TREE)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"
    }


def class_def(name: str) -> ast.ClassDef:
    for node in TREE.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found in LumbarSeg.py")


def parameter_fields() -> dict[str, str]:
    """Parameter name -> annotation source of LumbarSegParameterNode."""
    cls = class_def("LumbarSegParameterNode")
    return {node.target.id: ast.unparse(node.annotation) for node in cls.body if isinstance(node, ast.AnnAssign)}


# --------------------------------------------------------------------------- .ui


def test_ui_is_designer_xml_with_top_level_mrml_widget():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.find("class").text == "LumbarSeg"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "LumbarSeg"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique for childWidgetVariables"
    declared = {c.find("class").text for c in root.iter("customwidget")}
    custom = {w.get("class") for w in root.iter("widget") if w.get("class")[0] in "cq"}
    assert custom <= declared, f"undeclared custom widgets: {custom - declared}"


def test_every_ui_name_used_exists_with_its_class():
    widgets = ui_widgets()
    used = ui_names_used()
    assert used, "LumbarSeg.py uses no self.ui widgets?"
    assert used <= set(EXPECTED_WIDGETS), f"add the class of {used - set(EXPECTED_WIDGETS)} to EXPECTED_WIDGETS"
    for name in sorted(used):
        assert name in widgets, f"self.ui.{name} is not in {UI_FILE.name}"
        assert widgets[name].get("class") == EXPECTED_WIDGETS[name], name


def test_mrml_selectors_get_the_scene_and_node_types():
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    widgets = ui_widgets()
    selectors = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors == receivers

    def node_types(name):
        prop = next(p for p in widgets[name].findall("property") if p.get("name") == "nodeTypes")
        return [s.text for s in prop.iter("string")]

    assert node_types("inputVolumeSelector") == ["vtkMRMLScalarVolumeNode"]
    assert node_types("outputSegmentationSelector") == ["vtkMRMLSegmentationNode"]


def test_parameter_bindings_match_parameter_node():
    fields = parameter_fields()
    assert set(fields) == {"inputVolume", "outputSegmentation", "device", "writeMeshes", "writePreview"}
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget
    assert set(bound) == set(fields), "every parameter is bound to exactly one widget and vice versa"
    for parameter, widget in bound.items():
        annotation = fields[parameter]
        cls = widget.get("class")
        if annotation.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox"
            types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
            assert types == [annotation], parameter
        else:
            base = annotation.split("[", 1)[-1].split(",")[0] if annotation.startswith("Annotated") else annotation
            assert cls in CONNECTABLE[base], (parameter, cls)
            if cls == "QComboBox":
                assert "Choice(" in annotation, "a QComboBox binding needs the Choice validator"


# --------------------------------------------------------------------------- python source


def test_compiles_for_python_39_grammar():
    ast.parse(SOURCE, filename=str(MODULE_PY), feature_version=(3, 9))
    compile(SOURCE, str(MODULE_PY), "exec")


def test_no_runtime_syntax_newer_than_39():
    # No "from __future__ import annotations" (parameterNodeWrapper evaluates annotations),
    # so "X | None" annotations would fail on Python 3.9.
    for node in ast.walk(TREE):
        annotation = getattr(node, "annotation", None) or getattr(node, "returns", None)
        if annotation is not None:
            assert not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(annotation)), (
                f"line {node.lineno}: use Optional/Union")
        assert not isinstance(node, getattr(ast, "Match", ())), "match needs Python 3.10"


def test_no_module_removed_in_python_312_and_no_torch():
    imported = set()
    for node in ast.walk(TREE):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & REMOVED_IN_312
    assert "torch" not in imported, "torch must only be imported by the background process"


def _module_file(dotted: str) -> Path | None:
    path = REPO.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def lumbarseglib_imports() -> list[tuple[str, str]]:
    """(module, name) for every ``from LumbarSegLib... import name`` in LumbarSeg.py."""
    pairs = []
    for node in ast.walk(TREE):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "LumbarSegLib":
            pairs += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            pairs += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "LumbarSegLib"]
    return pairs


def test_lumbarseglib_imports_exist():
    pairs = lumbarseglib_imports()
    assert ("LumbarSegLib.slicer_bridge", "SegmentationProcess") in pairs
    for module, name in pairs:
        path = _module_file(module)
        assert path is not None, f"{module} does not exist"
        if name:
            exists = name in _defined_names(path) or _module_file(f"{module}.{name}") is not None
            assert exists, f"{module} has no {name}"


def test_top_level_lumbarseglib_imports_do_not_import_torch():
    top_level = sorted({module for node in TREE.body if isinstance(node, ast.ImportFrom)
                        for module in [node.module] if module and module.startswith("LumbarSegLib")})
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in top_level)
    code += "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing {top_level} imports torch into Slicer"


def test_module_classes_and_metadata():
    for name in ("LumbarSeg", "LumbarSegParameterNode", "LumbarSegWidget", "LumbarSegLogic", "LumbarSegTest"):
        class_def(name)
    bases = {ast.unparse(b) for b in class_def("LumbarSegTest").bases}
    assert bases == {"ScriptedLoadableModuleTest"}
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper"
               for d in class_def("LumbarSegParameterNode").decorator_list)
    init = next(n for n in class_def("LumbarSeg").body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    text = ast.unparse(init)
    assert "'Lumbar Spine Segmentation'" in text and "'Segmentation'" in text
    for fragment in ("not for diagnosis", "e13996", "Transitional anatomy", "startupCompleted()"):
        assert fragment in text, fragment
    test_methods = {n.name for n in class_def("LumbarSegTest").body if isinstance(n, ast.FunctionDef)}
    assert {"runTest", "setUp", "test_SegmentPhantom"} <= test_methods


def test_resource_paths_in_module_exist():
    calls = [node for node in ast.walk(TREE) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "resourcePath"]
    assert len(calls) >= 3
    for call in calls:
        parts = [arg.value for arg in call.args]
        assert all(isinstance(p, str) for p in parts)
        assert (REPO / "Resources").joinpath(*parts).is_file(), parts


def _module_root_function():
    func = next(n for n in TREE.body if isinstance(n, ast.FunctionDef) and n.name == "_moduleRoot")
    return ast.get_source_segment(SOURCE, func)


@pytest.mark.parametrize("layout", ["source tree", "built extension"])
def test_module_root_found_in_both_layouts(tmp_path, layout):
    if layout == "source tree":
        root = tmp_path / "repo"
        module_file = root / "LumbarSeg" / "LumbarSeg.py"
    else:
        root = tmp_path / "lib" / "Slicer-5.8" / "qt-scripted-modules"
        module_file = root / "LumbarSeg.py"
    (root / "LumbarSegLib").mkdir(parents=True)
    (root / "LumbarSegLib" / "__init__.py").write_text("")
    module_file.parent.mkdir(parents=True, exist_ok=True)
    namespace = {"os": os, "__file__": str(module_file)}
    exec(_module_root_function(), namespace)
    assert Path(namespace["_moduleRoot"]()) == root
    shutil.rmtree(root / "LumbarSegLib")
    with pytest.raises(ImportError):
        namespace["_moduleRoot"]()
