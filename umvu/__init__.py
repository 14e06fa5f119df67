"""umvu: a partial virtual machine hypervisor (VUOS umvu, in Python + C)."""

__version__ = "0.1.0"
