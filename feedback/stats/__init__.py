"""What the router knows, summed: the questions the dashboard, the stats API and
``routebandit report`` ask of the decision log (:class:`Stats`), and the hourly and daily
roll-ups that keep them fast (:class:`Rollup`, refreshed by a :class:`Refresher`).

>>> from feedback.store import Store
>>> store = Store("sqlite://")
>>> stats = Stats(store.engine)
>>> stats.rollup.refresh().hours
0
>>> store.close()
"""

from feedback.stats.figures import Reference
from feedback.stats.queries import Stats
from feedback.stats.rollup import Refresher, RefreshResult, Rollup
from feedback.stats.window import Window, WindowError, window

__all__ = ["Reference", "RefreshResult", "Refresher", "Rollup", "Stats", "Window",
           "WindowError", "window"]
