"""The qemu driver: real qemu processes controlled over QMP."""
