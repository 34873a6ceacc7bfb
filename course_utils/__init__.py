"""Helpers for the ViT course notebooks: self-checks, references, plots, data and devices.

The checks compare a student's code with references built on PyTorch's own modules or on
closed-form maths; none of this package is an exercise solution.
"""

from course_utils.device import check_devices, get_device, quick_mode, seed_everything

__all__ = ["check_devices", "get_device", "quick_mode", "seed_everything"]
