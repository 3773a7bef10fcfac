"""3D Slicer module: segment the lumbar vertebrae L1-L5 in CT with LumbarSegLib.

The pipeline runs in a background process (``PythonSlicer -m LumbarSegLib segment``)
so that Slicer stays responsive and torch is never imported in the Slicer process.
Everything that does not need Slicer lives in ``LumbarSegLib.slicer_bridge``.
"""

# No "from __future__ import annotations": parameterNodeWrapper reads the class annotations.
import importlib
import importlib.util
import logging
import os
import shutil
import sys
import time
from typing import Annotated, Callable, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _moduleRoot() -> str:
    """Folder that holds ``LumbarSegLib/`` and ``Resources/``.

    In the built extension they are installed beside this file; in the source tree
    (``<repo>/LumbarSeg`` added to "Additional module paths") they are one level up.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(root, "LumbarSegLib", "__init__.py")):
            return root
    raise ImportError(f"LumbarSegLib was found neither in {here} nor in its parent folder")


MODULE_ROOT = _moduleRoot()
if MODULE_ROOT not in sys.path:
    sys.path.insert(0, MODULE_ROOT)

from LumbarSegLib.io import output_stem  # noqa: E402
from LumbarSegLib.terminology import TERMINOLOGY_CONTEXT_NAME, TERMINOLOGY_LEVELS  # noqa: E402
from LumbarSegLib.slicer_bridge import (  # noqa: E402
    SLICER_REQUIREMENTS,
    Diagnostic,
    Finished,
    OutputLine,
    Progress,
    SegmentationProcess,
    build_segment_command,
    child_environment,
    expected_outputs,
    missing_requirements,
    parse_torch_probe,
    read_report,
    report_flags,
    report_table,
    requirement_name,
    torch_probe_command,
)

DEVICE_CHOICES = ["Auto", "CPU", "CUDA"]
LUMBAR_LEVELS = ("L1", "L2", "L3", "L4", "L5")
POLL_INTERVAL_MS = 200


def resourcePath(*parts: str) -> str:
    """Path of a file under ``Resources/`` in either layout."""
    return os.path.join(MODULE_ROOT, "Resources", *parts)


def loadTerminology() -> Optional[str]:
    """Load the LumbarSeg terminology context once, so the levels are pickable in Segment Editor."""
    terminologiesModule = getattr(slicer.modules, "terminologies", None)
    if terminologiesModule is None:
        return None
    terminologiesLogic = terminologiesModule.logic()
    loadedNames = vtk.vtkStringArray()
    terminologiesLogic.GetLoadedTerminologyNames(loadedNames)
    if TERMINOLOGY_CONTEXT_NAME in [loadedNames.GetValue(i) for i in range(loadedNames.GetNumberOfValues())]:
        return TERMINOLOGY_CONTEXT_NAME
    name = terminologiesLogic.LoadTerminologyFromFile(resourcePath("Terminology", "LumbarSeg.term.json"))
    if not name:
        logging.error("LumbarSeg: the terminology context could not be loaded")
        return None
    return name


#
# LumbarSeg
#


class LumbarSeg(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Lumbar Spine Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LumbarSeg developers"]
        self.parent.helpText = _("""
Segments the five lumbar vertebrae (L1-L5) of a CT volume, one segment per vertebra,
with a two-stage deep-learning method: a localization network finds the lumbar spine,
a 3D multi-scale XUNet segments the vertebrae in a box around it.
The result can be corrected in Segment Editor and shown in 3D.
<p><b>Limits.</b> For research use; not for diagnosis on its own: check every result.
Transitional anatomy (a sixth lumbar vertebra L6, thoracic T13, sacralized L5) is
detected and reported as a warning, never relabelled silently: confirm the level count
on the whole spine. Inputs must be CT in Hounsfield units that show the lumbar spine.</p>
<p><b>How to cite.</b> The method follows Lu et al., J Appl Clin Med Phys
2023;24(6):e13996 (localization network plus 3D XUNet); cite it and this extension.</p>
""")
        self.parent.acknowledgementText = _("""
The method follows Lu et al., J Appl Clin Med Phys 2023;24(6):e13996.
Vertebra labels follow the VerSe challenge (Sekuboyina et al.); terminology uses SNOMED CT codes.
Built on 3D Slicer, PyTorch, SimpleITK, VTK and slicerio.
""")
        iconPath = resourcePath("Icons", "LumbarSeg.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)
        slicer.app.connect("startupCompleted()", loadTerminology)


#
# LumbarSegParameterNode
#


@parameterNodeWrapper
class LumbarSegParameterNode:
    """Parameters saved with the scene.

    inputVolume - CT volume to segment.
    outputSegmentation - result; None means "create a new segmentation".
    device - Auto, CPU or CUDA.
    writeMeshes - also write one STL surface per vertebra.
    writePreview - also write the PNG preview.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(DEVICE_CHOICES), Default("Auto")]
    writeMeshes: bool = False
    writePreview: bool = False


#
# LumbarSegWidget
#


class LumbarSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, Segment/Cancel, progress, log, result actions."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._probe = None
        self._cudaAvailable = False
        self._cudaReason = _("Checking whether PyTorch sees a CUDA device...")
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resourcePath("UI", "LumbarSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LumbarSegLogic()
        self.ui.progressBar.hide()
        self.ui.reportTableWidget.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onSegmentEditorButton)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputChanged)
        self._timer.connect("timeout()", self.onTimer)

        self.initializeParameterNode()
        self.startDeviceProbe()

    def cleanup(self) -> None:
        if self._job is not None:
            self.logic.cancel(self._job)
        if self._probe is not None:
            self._probe.cancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self.logic.cancel(self._job)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: Optional[LumbarSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
            self.updateDeviceItems()
            self.updateGuiState()

    # -- device choice

    def startDeviceProbe(self) -> None:
        """Ask PythonSlicer (not this process) whether torch sees CUDA; the timer reads the answer."""
        if importlib.util.find_spec("torch") is None:
            self._cudaReason = _("PyTorch is not installed yet; it is installed on first use (CPU or CUDA build).")
            self.updateDeviceItems()
            return
        self._probe = SegmentationProcess(torch_probe_command(self.logic.pythonExecutable), timeout=300)
        self._probe.start()
        self._timer.start()

    def updateDeviceItems(self) -> None:
        cudaIndex = DEVICE_CHOICES.index("CUDA")
        cudaItem = self.ui.deviceComboBox.model().item(cudaIndex)
        if cudaItem is None:
            return
        cudaItem.setEnabled(self._cudaAvailable)
        cudaItem.setToolTip("" if self._cudaAvailable else self._cudaReason)
        if self._parameterNode and self._parameterNode.device == "CUDA" and not self._cudaAvailable:
            self._parameterNode.device = "Auto"

    def _pollProbe(self) -> None:
        for event in self._probe.poll():
            if isinstance(event, Finished):
                stdout = "\n".join(line.text for line in self._probe.log if line.stream == "stdout")
                status = parse_torch_probe(stdout)
                self._cudaAvailable = status.cuda_available
                if not status.installed:
                    self._cudaReason = _("PyTorch could not be imported by PythonSlicer.")
                elif not status.cuda_available:
                    self._cudaReason = _("PyTorch {version} sees no CUDA device (no NVIDIA GPU or a CPU-only build).").format(
                        version=status.version)
                self._probe = None
                self.updateDeviceItems()

    # -- state

    def updateGuiState(self, caller=None, event=None) -> None:
        running = self._job is not None
        parameters = self._parameterNode
        hasInput = bool(parameters and parameters.inputVolume)
        self.ui.segmentButton.enabled = running or hasInput
        self.ui.segmentButton.text = _("Cancel") if running else _("Segment lumbar spine")
        self.ui.segmentButton.toolTip = (
            _("Stop the segmentation and its background process.") if running
            else _("Segment L1-L5 of the input volume in a background process.") if hasInput
            else _("Select an input CT volume first."))
        for widget in (self.ui.inputsCollapsibleButton, self.ui.optionsCollapsibleButton):
            widget.enabled = not running
        hasOutput = bool(parameters and parameters.outputSegmentation)
        self.ui.segmentEditorButton.enabled = hasOutput and not running

    def onOutputChanged(self, node) -> None:
        self.ui.show3DButton.setSegmentationNode(node)
        self.updateGuiState()

    def setStatus(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def appendLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    # -- actions

    def onSegmentButton(self) -> None:
        if self._job is not None:
            self.logic.cancel(self._job)
            self.setStatus(_("Cancelling..."))
            return
        parameters = self._parameterNode
        self.ui.logTextEdit.clear()
        self.ui.flagsLabel.text = ""
        self.ui.reportTableWidget.hide()
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            self.logic.ensureDependencies()
            job = self.logic.start(
                parameters.inputVolume, parameters.outputSegmentation, device=parameters.device.lower(),
                writeMeshes=parameters.writeMeshes, writePreview=parameters.writePreview)
            parameters.outputSegmentation = job.outputSegmentation
            self._job = job
            self.appendLog(" ".join(job.process.command))
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.setStatus(_("Starting..."))
            self._timer.start()
        self.updateGuiState()

    def onTimer(self) -> None:
        if self._probe is not None:
            self._pollProbe()
        if self._job is not None:
            for event in self.logic.poll(self._job):
                self.onJobEvent(event)
        if self._probe is None and self._job is None:
            self._timer.stop()

    def onJobEvent(self, event) -> None:
        if isinstance(event, OutputLine):
            self.appendLog(event.text)
            if isinstance(event.update, Progress):
                self.ui.progressBar.value = round(100 * event.update.fraction)
                self.setStatus(_("Segmenting: {stage}").format(stage=event.update.stage))
            elif isinstance(event.update, Diagnostic) and event.update.level == "warning":
                self.ui.flagsLabel.text = "\n".join(filter(None, [self.ui.flagsLabel.text, event.update.message]))
            return
        job, self._job = self._job, None
        self.ui.progressBar.hide()
        self.updateGuiState()
        if event.status == "succeeded":
            self.showResult(job)
        elif event.status == "cancelled":
            self.setStatus(_("Cancelled."))
        else:
            self.setStatus(event.error, error=True)
            self.ui.logCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(_("Segmentation failed:\n{error}").format(error=event.error))

    def showResult(self, job) -> None:
        found = [level for level in TERMINOLOGY_LEVELS
                 if job.outputSegmentation.GetSegmentation().GetSegmentIdBySegmentName(level)]
        self.setStatus(_("Done in {seconds:.0f} s: {levels}.").format(
            seconds=job.elapsed, levels=", ".join(found) or _("no vertebra")))
        if job.keptOutputDir:
            self.appendLog(_("Output files kept in {folder}").format(folder=job.keptOutputDir))
        if job.report is None:
            return
        flags = report_flags(job.report)
        if flags:
            self.ui.flagsLabel.text = "\n".join(flags)
        columns, rows = report_table(job.report)
        table = self.ui.reportTableWidget
        table.clear()
        table.setColumnCount(len(columns))
        table.setRowCount(len(rows))
        table.setHorizontalHeaderLabels(columns)
        for rowIndex, row in enumerate(rows):
            for columnIndex, text in enumerate(row):
                table.setItem(rowIndex, columnIndex, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()
        table.setVisible(bool(rows))

    def onSegmentEditorButton(self) -> None:
        segmentationNode = self._parameterNode.outputSegmentation
        volumeNode = self._parameterNode.inputVolume
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentationNode)
        if volumeNode:
            editor.setSourceVolumeNode(volumeNode)


#
# LumbarSegLogic
#


class SegmentationJob:
    """One run: the nodes, the temporary folder, the background process and the result."""

    def __init__(self, inputVolume, outputSegmentation, workDir: str, outputDir: str,
                 stem: str, process: SegmentationProcess, keptOutputDir: Optional[str]):
        self.inputVolume = inputVolume
        self.outputSegmentation = outputSegmentation
        self.workDir = workDir
        self.outputDir = outputDir
        self.stem = stem
        self.process = process
        self.keptOutputDir = keptOutputDir
        self.startTime = time.time()
        self.elapsed = 0.0
        self.finished: Optional[Finished] = None
        self.report: Optional[dict] = None


class LumbarSegLogic(ScriptedLoadableModuleLogic):
    """Runs the pipeline without the GUI.

    From the Python console::

        logic = slicer.util.getModuleLogic("LumbarSeg")  # or LumbarSeg.LumbarSegLogic()
        job = logic.segment(volumeNode, device="cpu")     # waits; job.outputSegmentation holds L1..L5

    The widget uses :meth:`start`, :meth:`poll` and :meth:`cancel` instead.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        # PythonSlicer is what Slicer's own modules use to run Python in a child process.
        self.pythonExecutable = shutil.which("PythonSlicer") or sys.executable
        self.timeout: Optional[float] = None

    def getParameterNode(self) -> LumbarSegParameterNode:
        return LumbarSegParameterNode(super().getParameterNode())

    # -- dependencies

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install missing Python packages into Slicer (PyTorch first), asking the user first.

        Uses ``slicer.packaging.pip_ensure`` (Slicer >= 5.11), otherwise the PyTorch
        extension's ``PyTorchUtils`` for torch and ``slicer.util.pip_install`` for the rest.
        torch itself is only imported by the background process.

        Raises:
            RuntimeError: when a package is still missing (declined, or installation failed).
        """
        missing = missing_requirements(SLICER_REQUIREMENTS)
        if not missing:
            return
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("Lumbar Spine Segmentation needs these Python packages, which are not installed yet:\n\n"
                  "{packages}\n\nInstall them now? PyTorch is large (up to a few GB) and the download can "
                  "take several minutes.").format(packages="\n".join(missing)),
                _("Install Python packages")):
            raise RuntimeError(_("Python packages are missing: {packages}").format(packages=", ".join(missing)))
        try:
            packagingModule = importlib.import_module("slicer.packaging")
        except ImportError:
            packagingModule = None
        if packagingModule is not None and hasattr(packagingModule, "pip_ensure"):
            from packaging.requirements import Requirement

            packagingModule.pip_ensure([Requirement(req) for req in missing], prompt_install=False,
                                       requester=_("Lumbar Spine Segmentation"))
        else:
            self._installWithPyTorchUtils(missing)
        importlib.invalidate_caches()
        stillMissing = missing_requirements(SLICER_REQUIREMENTS)
        if stillMissing:
            raise RuntimeError(_("Installation did not complete; still missing: {packages}").format(
                packages=", ".join(stillMissing)))

    @staticmethod
    def _installWithPyTorchUtils(missing: list) -> None:
        others = [req for req in missing if requirement_name(req) != "torch"]
        if len(others) < len(missing):
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(_("This module needs the PyTorch extension: install it from the Extensions Manager."))
            torchRequirement = next(req for req in missing if requirement_name(req) == "torch")
            version = torchRequirement[len("torch"):] or None
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                            torchVersionRequirement=version) is None:
                raise RuntimeError(_("PyTorch was not installed."))
        if others:
            slicer.util.pip_install(others)

    # -- running

    def start(self, inputVolume, outputSegmentation=None, device: str = "auto", writeMeshes: bool = False,
              writePreview: bool = False, threads: Optional[int] = None) -> SegmentationJob:
        """Write the input to a temporary file and start the pipeline in the background.

        Args:
            inputVolume: CT scalar volume node.
            outputSegmentation: segmentation node to fill, or None to create one.
            device: ``auto``, ``cpu`` or ``cuda``.
            writeMeshes, writePreview: also write STL meshes / the PNG preview; the output
                folder is then kept (``job.keptOutputDir``) instead of deleted.
            threads: CPU threads for the pipeline, or None for its default.

        Raises:
            ValueError: when the input volume is missing or empty.
        """
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError(_("Select an input CT volume (a loaded scalar volume with image data)."))
        if outputSegmentation is None:
            outputSegmentation = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} lumbar spine"))
        workDir = slicer.util.tempDirectory()
        inputPath = os.path.join(workDir, "volume.nrrd")
        slicer.util.exportNode(inputVolume, inputPath, {"useCompression": 0}, world=True)
        keptOutputDir = None
        if writeMeshes or writePreview:
            keptOutputDir = os.path.join(slicer.app.defaultScenePath, "LumbarSeg",
                                         f"{inputVolume.GetName()}_{time.strftime('%Y%m%d-%H%M%S')}")
        outputDir = keptOutputDir or os.path.join(workDir, "output")
        command = build_segment_command(self.pythonExecutable, inputPath, outputDir, device=device,
                                        threads=threads, mesh="stl" if writeMeshes else None, preview=writePreview)
        process = SegmentationProcess(command, env=child_environment(os.environ, MODULE_ROOT), cwd=MODULE_ROOT,
                                      timeout=self.timeout)
        job = SegmentationJob(inputVolume, outputSegmentation, workDir, outputDir, output_stem(inputPath),
                              process, keptOutputDir)
        try:
            process.start()
        except OSError:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        logging.info("LumbarSeg: started %s", " ".join(command))
        return job

    def poll(self, job: SegmentationJob) -> list:
        """New events of ``job``; at the end the result is loaded and the last event is its :class:`Finished`."""
        events = job.process.poll()
        if events and isinstance(events[-1], Finished):
            events[-1] = self._complete(job, events[-1])
        return events

    def cancel(self, job: SegmentationJob) -> None:
        """Stop the job's process tree; :meth:`poll` reports the end."""
        job.process.cancel()

    def segment(self, inputVolume, outputSegmentation=None, device: str = "auto", writeMeshes: bool = False,
                writePreview: bool = False, on_progress: Optional[Callable[[float, str], None]] = None,
                wait: bool = True) -> SegmentationJob:
        """Segment ``inputVolume``; with ``wait`` (default) return when the result is loaded.

        ``on_progress(fraction, stage)`` is called for each PROGRESS line.

        Raises:
            RuntimeError: with the pipeline's message when it failed, was cancelled or timed out.
        """
        job = self.start(inputVolume, outputSegmentation, device=device, writeMeshes=writeMeshes,
                         writePreview=writePreview)
        if not wait:
            return job
        while job.finished is None:
            for event in self.poll(job):
                if on_progress and isinstance(event, OutputLine) and isinstance(event.update, Progress):
                    on_progress(event.update.fraction, event.update.stage)
            slicer.app.processEvents()
            time.sleep(POLL_INTERVAL_MS / 1000)
        if job.finished.status != "succeeded":
            raise RuntimeError(job.finished.error)
        return job

    # -- result

    def _complete(self, job: SegmentationJob, finished: Finished) -> Finished:
        job.elapsed = time.time() - job.startTime
        try:
            if finished.status == "succeeded":
                self.loadResult(job)
        except Exception as exc:
            logging.exception("LumbarSeg: loading the result failed")
            finished = Finished(finished.returncode, "failed", _("Loading the result failed: {error}").format(error=exc))
        finally:
            shutil.rmtree(job.workDir, ignore_errors=True)
        job.finished = finished
        logging.info("LumbarSeg: %s after %.1f s", finished.status, job.elapsed)
        return finished

    def loadResult(self, job: SegmentationJob) -> None:
        """Load ``<stem>.seg.nrrd`` into the output node and place it for viewing and editing."""
        outputs = expected_outputs(job.outputDir, job.stem)
        loadTerminology()  # the file's segments refer to the LumbarSeg terminology context
        segmentationNode = job.outputSegmentation
        segmentationNode.GetSegmentation().RemoveAllSegments()
        storageNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        try:
            storageNode.SetFileName(str(outputs["segmentation"]))
            if not storageNode.ReadData(segmentationNode):
                raise RuntimeError(_("cannot read {path}").format(path=outputs["segmentation"]))
        finally:
            slicer.mrmlScene.RemoveNode(storageNode)
        inputVolume = job.inputVolume
        segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(), inputVolume.GetID())
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        studyItem = shNode.GetItemParent(shNode.GetItemByDataNode(inputVolume))
        shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), studyItem)
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.CreateClosedSurfaceRepresentation()
        if outputs["report"].is_file():
            job.report = read_report(outputs["report"])


#
# LumbarSegTest
#


class LumbarSegTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: ``Slicer --testing --python-code "slicer.selfTests['LumbarSeg']()"``."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TerminologyLoaded()
        self.setUp()
        self.test_SegmentPhantom()

    def test_TerminologyLoaded(self):
        self.assertEqual(loadTerminology(), TERMINOLOGY_CONTEXT_NAME)

    def test_SegmentPhantom(self):
        """Segment a synthetic lumbar CT and check L1..L5 and their volumes."""
        import sitkUtils

        from LumbarSegLib.phantom import make_phantom

        self.delayDisplay("Making a lumbar phantom")
        ct, _labels, _anatomy = make_phantom(seed=0, kind="lumbar", spacing=(1.5, 1.5, 1.5))
        volumeNode = sitkUtils.PushVolumeToSlicer(ct, name="LumbarPhantom")
        logic = LumbarSegLogic()
        logic.ensureDependencies(askConfirmation=False)

        self.delayDisplay("Segmenting")
        fractions = []
        job = logic.segment(volumeNode, device="auto", on_progress=lambda fraction, stage: fractions.append(fraction))
        self.assertEqual(job.finished.status, "succeeded")
        self.assertTrue(fractions and fractions == sorted(fractions), f"progress not monotonic: {fractions}")

        segmentationNode = job.outputSegmentation
        segmentation = segmentationNode.GetSegmentation()
        voxelMl = float(volumeNode.GetSpacing()[0] * volumeNode.GetSpacing()[1] * volumeNode.GetSpacing()[2]) / 1000.0
        for level in LUMBAR_LEVELS:
            segmentId = segmentation.GetSegmentIdBySegmentName(level)
            self.assertTrue(segmentId, f"segment {level} is missing")
            voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            volumeMl = float(voxels.astype(bool).sum()) * voxelMl
            self.assertTrue(20.0 <= volumeMl <= 150.0, f"{level}: {volumeMl:.1f} mL")

        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        self.assertEqual(shNode.GetItemParent(shNode.GetItemByDataNode(segmentationNode)),
                         shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode)))
        self.assertTrue(segmentation.ContainsRepresentation(
            slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()))
        self.delayDisplay("Test passed")
