"""Read models rebuilt from the streams: Postgres and DuckDB.

Embedding (``nexus up``)::

    projector = Projector(ProjectorSettings.load())
    await projector.start()
    ...
    await projector.stop()

``replay(settings, ["postgres", "duckdb"])`` rebuilds stores nothing else is
writing; ``Projector.replay()`` rebuilds them under a running projector.
"""

from projections.projector import Projector, build_stores
from projections.replay import replay
from projections.settings import ProjectorSettings

__all__ = ["Projector", "ProjectorSettings", "build_stores", "replay"]
