"""Fleet mode (issue 18, DESIGN §9): many hosts, one desired state, kept in etcd v3.

keys.py is the layout of the keys under one prefix; store.py the async client over etcd's JSON
gateway (docs/fleet.md says why ours); publish.py mirrors a manifests directory into etcd;
source.py is the engine's manifest source read from etcd instead of a directory; registration.py
keeps a host registered under a lease. Beside the engine, under the API: it uses manifests and
settings, and nothing here decides or drives a domain.
"""
