"""LumbarSegLib: segmentation of the lumbar vertebrae L1-L5 in CT, without Slicer.

The package never imports slicer or qt; the Slicer module runs it in a
background process (``python -m LumbarSegLib segment ...``).
"""

__version__ = "0.1.0"
