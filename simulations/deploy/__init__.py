"""Edge deployment helpers: TLS / node-key credentials, secure SuperLink / SuperNode commands, pre-flight checks."""

from simulations.deploy.commands import SuperNodeSpec, superlink_command, supernode_command, write_connection
from simulations.deploy.credentials import ServerCredentials, generate_node_keys, generate_tls
from simulations.deploy.preflight import (
    check_data_folder,
    check_reachable,
    check_tls,
    explain_supernode_failure,
    split_address,
)

__all__ = [
    "ServerCredentials",
    "SuperNodeSpec",
    "check_data_folder",
    "check_reachable",
    "check_tls",
    "explain_supernode_failure",
    "generate_node_keys",
    "generate_tls",
    "split_address",
    "superlink_command",
    "supernode_command",
    "write_connection",
]
