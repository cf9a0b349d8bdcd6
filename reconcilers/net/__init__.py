"""The host side of managed networks (issue 13): bridge, nftables NAT/forwarding, dnsmasq.

Not wired into the engine yet. Every value that reaches a command line or a generated file is
checked by names.py first; commands run through command.py (optionally inside a network
namespace).
"""
