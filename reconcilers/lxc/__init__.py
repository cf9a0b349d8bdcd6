"""The lxc driver: real LXC containers driven with the lxc-* tools."""
