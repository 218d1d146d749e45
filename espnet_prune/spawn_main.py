"""Main module of processes that the launcher's program spawns (ESPnet's multi-GPU workers).

``multiprocessing``'s spawn start method re-imports the parent's main module in each child
under the name ``__mp_main__``, but never a package's ``__main__``. The launcher therefore
names this module as its main module's spec; importing it registers the plugin (with
import-time prints sent to stderr, as in the launcher).
"""

from espnet_prune import register
from espnet_prune.utils.import_output import send_import_output_to_stderr, stdout_to_stderr

send_import_output_to_stderr()
with stdout_to_stderr():
    register()
