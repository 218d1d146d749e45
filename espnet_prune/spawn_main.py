"""Main module of processes that the launcher's program spawns (ESPnet's multi-GPU workers).

``multiprocessing``'s spawn start method re-imports the parent's main module in each child
under the name ``__mp_main__``, but never a package's ``__main__``. The launcher therefore
names this module as its main module's spec; importing it registers the plugin.
"""

from espnet_prune import register

register()
