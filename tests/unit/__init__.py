"""Tests of the controller (controller/); a package so tests can share apisupport."""
