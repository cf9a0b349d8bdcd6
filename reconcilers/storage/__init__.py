"""What domctl makes on disk for a domain's storage: DESIGN §2's `storage/`.

A pool directory holds, per domain, the volumes domctl makes (qcow2 overlays on a base image,
empty qcow2 disks), its cloud-init NoCloud seed and its UEFI variables. The modules:
pool.py (the layout, and whose a path is), volumes.py (qemu-img: create, inspect, grow; qemu's
image locks read to tell an image in use), seed.py (the NoCloud ISO), firmware.py (OVMF and a
domain's NVRAM). errors.py: `Refused` (this host cannot do it for the spec, naming the field)
and `StorageFailed` (a tool or the file system failed).

Driver-agnostic: it imports neither driver; reconcilers/qemu/disks.py puts it together for a
qemu domain. Nothing here ever deletes or changes a file outside the pool except by reading it.
"""
