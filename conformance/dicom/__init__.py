"""The DICOM Conformance Statement (PS3.2 style), generated from what the adapter registers."""
