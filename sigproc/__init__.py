"""Signal processing for ECG: records, filters, normalisation, R peaks, beats.

Depends on numpy, scipy, wfdb and PyEMD only; no framework is imported here.
"""
