"""What a domain is and how it moves: the model, the decisions, and the drivers.

Never imports `controller`; the qemu and lxc drivers never import each other.
"""
