"""Triton kernels and their launchers (imported as fastrnn.kernels)."""
