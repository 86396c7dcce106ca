"""Runs os-ken apps as its osken-manager command does:
    python osken_run.py [--ofp-listen-host H] [--ofp-tcp-listen-port N] os_ken.app.X ...

os-ken 1.4.1 is the last release that ships simple_switch_13 (later ones
ship no apps). Its osken-manager, and its app manager, import a sentinel
that eventlet has since removed (eventlet.wsgi.ALREADY_HANDLED) though
only its REST API uses it; an older eventlet does not run on this Python.
So this launcher puts the sentinel back first and starts the apps itself."""
import sys

import eventlet.wsgi

if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
    eventlet.wsgi.ALREADY_HANDLED = object()

from os_ken.lib import hub  # noqa: E402

hub.patch(thread=False)

from os_ken import cfg  # noqa: E402
from os_ken.base.app_manager import AppManager  # noqa: E402
from os_ken.controller import controller  # noqa: E402,F401  (registers the ofp options)

apps = [a for a in sys.argv[1:] if a.startswith("os_ken.")]
cfg.CONF(args=[a for a in sys.argv[1:] if a not in apps], project="os_ken")
print("osken_run: starting", apps, flush=True)
AppManager.run_apps(apps)
