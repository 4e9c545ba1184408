"""The plumbing shared by eventray's local dev services (the Kafka broker, the schema registry): JVMs on loopback.

Each service runs as a detached JVM identified by its state dir, which holds a pid file and a JSON record.
What is shared, by module:

- :mod:`.detached_children`: spawn a JVM detached with a log file; peek at its exit; stop a child still ours.
- :mod:`.command_lines`: the argv of a pid, which is how a service recognises its own JVM.
- :mod:`.recognised_processes`: stop a recorded pid (SIGTERM, bounded wait, SIGKILL) only while recognised.
- :mod:`.service_lifecycle`: start (spawn, record, wait until answering, clean up on failure) and stop.
- :mod:`.state_files`: the pid and record files, written atomically.
- :mod:`.external_tools`: ``java``/``mvn``/``openssl`` on PATH, running them with a timeout, quoting output.
- :mod:`.locations`: the default cache and state dirs of a service (``EVENTRAY_CACHE_DIR``).
- :mod:`.loopback_ports`: a requested loopback port shown free, or a free one.
- :mod:`.terminal_commands`: what ``eventray <service> up|down|status`` share (config from args, short paths).

Errors: this package defines none. Each call that can fail takes the service's :class:`ServiceErrors` and
raises the service's own error class (``DevBrokerError``, ``DevRegistryError``) with a message ending in an
"Operator action:" line; the service's public API and messages stay its own.
"""

from .command_lines import command_line
from .detached_children import peek_child_exit, spawn_detached, stop_own_child
from .external_tools import last_lines, read_log_tail, require_tool, run_tool
from .locations import default_cache_dir, default_state_dir
from .loopback_ports import LOOPBACK_HOST, bound_loopback_socket, free_loopback_port
from .recognised_processes import Recognise, terminate_recognised
from .service_errors import ServiceErrors
from .service_lifecycle import NotAnswering, start_recorded, stop_recorded, wait_until_answering
from .state_files import PidAndRecordFiles
from .terminal_commands import config_from_args, display_path

__all__ = [
    "LOOPBACK_HOST",
    "NotAnswering",
    "PidAndRecordFiles",
    "Recognise",
    "ServiceErrors",
    "bound_loopback_socket",
    "command_line",
    "config_from_args",
    "default_cache_dir",
    "default_state_dir",
    "display_path",
    "free_loopback_port",
    "last_lines",
    "peek_child_exit",
    "read_log_tail",
    "require_tool",
    "run_tool",
    "spawn_detached",
    "start_recorded",
    "stop_own_child",
    "stop_recorded",
    "terminate_recognised",
    "wait_until_answering",
]
