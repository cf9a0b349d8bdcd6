"""Tests of the lxc driver (reconcilers/lxc)."""
